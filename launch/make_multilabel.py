"""Make a multi-label corpus from a single-label one by merging pairs of documents of different classes.

    python launch/make_multilabel.py --source ../shared/data/ag_news_mini --out data/ag_pairs
    python launch/train.py --train data/ag_pairs/train.csv --test data/ag_pairs/test.csv --loss ova ...

Writes OUT/train.csv and OUT/test.csv (label column like "1,3") and OUT/classes.txt; see
data_pipeline/merged_pairs.py for how documents are paired.
"""
import argparse
import os

from fasttext_horovod.distributed.logs import results
from fasttext_horovod.launch.common import run_cli


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="directory with train.csv, test.csv (and classes.txt)")
    parser.add_argument("--out", required=True, help="directory to write the merged corpus to")
    parser.add_argument("--single-fraction", type=float, default=0.2, help="share of documents left single")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from fasttext_horovod.data_pipeline.merged_pairs import write_merged_pairs
    for split in ("train.csv", "test.csv"):
        rows = write_merged_pairs(os.path.join(args.source, split), os.path.join(args.out, split), args.seed,
                                  args.single_fraction)
        results.info(f"{os.path.join(args.out, split)}: {rows} documents")


if __name__ == "__main__":
    run_cli(main)
