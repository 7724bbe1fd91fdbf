"""Write a SYNTHETIC corpus with a paper dataset's size and layout, to measure throughput at scale.

    python launch/synthesize.py --dataset yelp_polarity --data-root data_synthetic
    python launch/synthesize.py --dataset all --data-root data_synthetic --scale 0.1
    python launch/train.py --dataset yelp_polarity --data-root data_synthetic --model-dir runs/synthetic ...

Not real text: the data root's name must say "synthetic", and each dataset directory gets a
SYNTHETIC.txt describing how it was made (see data_pipeline/synthetic.py).
"""
import argparse

from fasttext_horovod.distributed.logs import results
from fasttext_horovod.launch.common import run_cli


def main():
    from fasttext_horovod.data_pipeline.datasets import DATASETS, dataset_spec
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}, or all")
    parser.add_argument("--data-root", default="data_synthetic", help="must have 'synthetic' in its name")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real document counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    specs = list(DATASETS.values()) if args.dataset == "all" else [dataset_spec(args.dataset)]
    from fasttext_horovod.data_pipeline.synthetic import synthetic_counts, write_synthetic_dataset
    from fasttext_horovod.distributed.progress import ProgressReporter
    for spec in specs:
        total = sum(synthetic_counts(spec, args.scale))
        reporter = ProgressReporter(total, "docs")
        try:
            directory = write_synthetic_dataset(spec, args.data_root, args.scale, args.seed, reporter.update)
        finally:
            reporter.close()
        results.info(f"{spec.name}: SYNTHETIC corpus of {total:,} documents in {directory}")


if __name__ == "__main__":
    run_cli(main)
