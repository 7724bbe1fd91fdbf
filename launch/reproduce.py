"""Reproduce Table 1 of "Bag of Tricks for Efficient Text Classification" (fastText, h=10).

    python launch/reproduce.py --data-root data                          # all eight, CPU
    python launch/reproduce.py --data-root data --datasets ag_news dbpedia --gpu 0
    horovodrun -np 4 python launch/reproduce.py --data-root data --gpu 0

Trains every dataset twice with the paper's settings (dim 10, 5 epochs, bucket 10M, the
per-dataset learning rate of classification-results.sh; unigrams, then bigrams), evaluates
on its test set, and writes a Markdown table beside the paper's accuracy with training
seconds per epoch and the hardware (<out>.md, and <out>.json). A row whose data is a
sample smaller than the real dataset, or a SYNTHETIC corpus, says so; so does a table whose
settings were overridden.
"""
import argparse
import os
import time

from fasttext_horovod.distributed.logs import log, results
from fasttext_horovod.launch.common import configure_mxnet, describe_hardware, run_cli

PAPER_SETTINGS = {"dim": 10, "epoch": 5, "bucket": 10_000_000}
NGRAMS = {"unigrams": 1, "bigrams": 2}


def parse_args():
    from fasttext_horovod.data_pipeline.datasets import DATASETS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data", help="datasets as <root>/<name>_csv/{train,test}.csv")
    parser.add_argument("--datasets", nargs="+", default=["all"], help=f"some of {', '.join(DATASETS)} (default all)")
    parser.add_argument("--out", default=os.path.join("runs", "reproduce", "table"), help="writes OUT.md and OUT.json")
    parser.add_argument("--runs-dir", default=os.path.join("runs", "reproduce"), help="one model dir per run")
    parser.add_argument("--cache-dir", default=".fasttext_cache")
    parser.add_argument("--gpu", type=int, help="GPU index (under Horovod: one GPU per rank)")
    parser.add_argument("--thread", type=int, help="CPU threads for MXNet operators")
    parser.add_argument("--seed", type=int, default=0)
    for name, value in PAPER_SETTINGS.items():
        parser.add_argument(f"--{name}", type=int, default=value, help=f"override the paper's {value} (quick runs)")
    return parser.parse_args()


def count_rows(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def describe_data(spec, data_root: str) -> dict:
    """What was actually trained on: real or synthetic, and how much of the dataset."""
    from fasttext_horovod.data_pipeline.synthetic import is_synthetic
    train_rows, test_rows = count_rows(spec.train_path(data_root)), count_rows(spec.test_path(data_root))
    if is_synthetic(spec.dataset_dir(data_root)):
        kind = "SYNTHETIC"
    elif (train_rows, test_rows) == (spec.train_rows, spec.test_rows):
        kind = "real"
    else:
        kind = "real sample"
    return {"kind": kind, "train_rows": train_rows, "test_rows": test_rows}


def run_one(spec, word_ngrams: int, args, world) -> dict:
    """Train one configuration; returns accuracy (on rank 0) and seconds per epoch."""
    from fasttext_horovod.distributed.settings import TrainConfig
    from fasttext_horovod.distributed.training import Trainer
    from fasttext_horovod.data_pipeline.shards import labelled_file_shard
    from fasttext_horovod.model.inference import evaluate
    config = TrainConfig(train=spec.train_path(args.data_root), dataset=spec.name, lr=spec.lr,
                         model_dir=os.path.join(args.runs_dir, f"{spec.name}-{word_ngrams}gram"),
                         cache_dir=args.cache_dir, dim=args.dim, epoch=args.epoch, word_ngrams=word_ngrams,
                         bucket=args.bucket, gpu=args.gpu, seed=args.seed, optimizer="sgd")  # the paper's
    trainer = Trainer(config, world)
    metrics = trainer.train()
    result = {"seconds_per_epoch": metrics["train_seconds"] / args.epoch,
              "examples_per_second": metrics["examples_per_second"]}
    if world.is_root:  # evaluated after training, so the timing is training alone
        docs = labelled_file_shard(spec.test_path(args.data_root), trainer.dictionary, trainer.num_classes,
                                   trainer.corpus.directory)
        result["accuracy"] = evaluate(trainer.model, docs, 1, trainer.ctx).accuracy
    return result


def markdown(rows, settings: dict, machine: str, world_size: int) -> str:
    overridden = {k: v for k, v in settings.items() if PAPER_SETTINGS.get(k, v) != v}
    lines = ["# fastText Table 1, reproduced", "",
             f"Hardware: {machine}; {world_size} process{'es' if world_size > 1 else ''}.",
             f"Settings: dim {settings['dim']}, {settings['epoch']} epochs, bucket {settings['bucket']:,}, "
             "per-dataset lr as fastText's classification-results.sh, seed "
             f"{settings['seed']}; accuracy on the test set, seconds of training per epoch.", ""]
    if overridden:
        lines += ["**Settings differ from the paper's** (" + ", ".join(f"{k} {v}" for k, v in overridden.items())
                  + "): not comparable to its numbers.", ""]
    lines += ["| dataset | data (train / test docs) | lr | unigrams | paper | bigrams | paper "
              "| s/epoch unigrams | s/epoch bigrams |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        data = row["data"]
        kind = data["kind"] if data["kind"] != "real sample" else (
            f"real sample (full set {row['full_rows'][0]:,} / {row['full_rows'][1]:,})")
        uni, bi = row["runs"]["unigrams"], row["runs"]["bigrams"]
        lines.append(f"| {row['dataset']} | {kind}, {data['train_rows']:,} / {data['test_rows']:,} | {row['lr']} "
                     f"| {100 * uni['accuracy']:.1f} | {row['paper'][0]} | {100 * bi['accuracy']:.1f} "
                     f"| {row['paper'][1]} | {uni['seconds_per_epoch']:.2f} | {bi['seconds_per_epoch']:.2f} |")
    if any(row["data"]["kind"] == "SYNTHETIC" for row in rows):
        lines += ["", "SYNTHETIC rows are generated data (data_pipeline/synthetic.py): their accuracy says "
                      "nothing about the paper's; only their timing is of interest."]
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    configure_mxnet(args.thread, args.gpu)
    from fasttext_horovod.data_pipeline.datasets import DATASETS, dataset_spec
    from fasttext_horovod.data_pipeline.errors import InputError
    from fasttext_horovod.data_pipeline.readers import check_readable_file
    from fasttext_horovod.distributed.world import init_world
    from fasttext_horovod.model.checkpoint import write_json_atomic
    specs = list(DATASETS.values()) if args.datasets == ["all"] else [dataset_spec(n) for n in args.datasets]
    for spec in specs:  # all present before hours of training start
        for path in (spec.train_path(args.data_root), spec.test_path(args.data_root)):
            if not os.path.exists(path):
                raise InputError(path, f"no such file; fetch it with: python launch/download.py --dataset "
                                       f"{spec.name} --data-root {args.data_root}")
            check_readable_file(path)
    world = init_world()
    rows = []
    for spec in specs:
        runs = {name: run_one(spec, n, args, world) for name, n in NGRAMS.items()}
        if world.is_root:
            rows.append({"dataset": spec.name, "lr": spec.lr, "paper": spec.paper_accuracy, "runs": runs,
                         "full_rows": (spec.train_rows, spec.test_rows),
                         "data": describe_data(spec, args.data_root)})
    if not world.is_root:
        return
    settings = {"dim": args.dim, "epoch": args.epoch, "bucket": args.bucket, "seed": args.seed}
    machine = describe_hardware(args.gpu, world.size)
    table = markdown(rows, settings, machine, world.size)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".md", "w", encoding="utf-8") as out:
        out.write(table)
    write_json_atomic(args.out + ".json", {"settings": settings, "hardware": machine, "world_size": world.size,
                                           "date": time.strftime("%Y-%m-%d"), "rows": rows})
    results.info(table)
    log.info(f"wrote {args.out}.md and {args.out}.json")


if __name__ == "__main__":
    run_cli(main)
