"""This trainer against fastText's C++ trainer, side by side, on the same data and settings.

    python bench/compare_fasttext.py                      # the bundled AG News sample
    python bench/compare_fasttext.py --resplits 3         # plus 3 fresh splits no test saw

For unigrams and bigrams (dim 10, lr 0.25, 5 epochs, bucket 10M, 2 threads) it runs each
trainer `--repeats` times, each in a fresh process from a cold start (our preprocessing
included, as fastText reads its text every run), and reports medians: accuracy, wall
time of the whole process, training time, examples/s, and ours/fastText ratios. Writes
bench/results/compare_fasttext.json and .png.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from fasttext_horovod.bench.fasttext_cpp import fasttext_copies, train_and_test

SAMPLE = os.path.join(REPO, "samples", "ag_news_mini")
SETTINGS = {"lr": 0.25, "dim": 10, "epoch": 5, "bucket": 10_000_000}
CONFIGS = {"unigrams": 1, "bigrams": 2}


def run_ours(train_csv, test_csv, word_ngrams, workdir):
    """One cold run of launch/train.py: wall seconds and its metrics JSON."""
    metrics_path = os.path.join(workdir, "metrics.json")
    command = [sys.executable, os.path.join(REPO, "launch", "train.py"), "--train", train_csv, "--test", test_csv,
               "--model-dir", os.path.join(workdir, "model"), "--cache-dir", os.path.join(workdir, "cache"),
               "--metrics-out", metrics_path, "--word-ngrams", str(word_ngrams), "--thread", "2",
               *[f"--{k}={v}" for k, v in SETTINGS.items()]]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    with open(metrics_path) as handle:
        metrics = json.load(handle)
    shutil.rmtree(workdir)
    return {"accuracy": metrics["accuracy"], "wall_seconds": wall, "train_seconds": metrics["train_seconds"],
            "examples_per_second": metrics["examples_per_second"]}


def run_fasttext(train_txt, test_txt, word_ngrams, num_docs):
    bucket = SETTINGS["bucket"] if word_ngrams > 1 else 0  # as fastText's CLI does for unigrams
    result = train_and_test(train_txt, test_txt, wordNgrams=word_ngrams, thread=2,
                            **{**SETTINGS, "bucket": bucket})
    result["examples_per_second"] = SETTINGS["epoch"] * num_docs / result["train_seconds"]
    return result


def medians(runs):
    return {key: statistics.median(run[key] for run in runs) for key in runs[0] if isinstance(runs[0][key], float)}


def compare(train_csv, test_csv, repeats, scratch):
    train_txt, test_txt = fasttext_copies(train_csv, test_csv, scratch)
    with open(train_csv, "rb") as handle:
        num_docs = sum(1 for _ in handle)
    rows = {}
    for name, word_ngrams in CONFIGS.items():
        ours = [run_ours(train_csv, test_csv, word_ngrams, tempfile.mkdtemp(dir=scratch)) for _ in range(repeats)]
        theirs = [run_fasttext(train_txt, test_txt, word_ngrams, num_docs) for _ in range(repeats)]
        ours_m, theirs_m = medians(ours), medians(theirs)
        rows[name] = {"ours": ours_m, "fasttext": theirs_m, "runs": {"ours": ours, "fasttext": theirs},
                      "ratio": {"wall_time": ours_m["wall_seconds"] / theirs_m["wall_seconds"],
                                "train_time": ours_m["train_seconds"] / theirs_m["train_seconds"],
                                "examples_per_second": ours_m["examples_per_second"] / theirs_m["examples_per_second"]},
                      "accuracy_gap_points": 100 * (ours_m["accuracy"] - theirs_m["accuracy"])}
    return rows


def resplit(seed, directory):
    """A fresh stratified 6,000/1,600 split of the 7,600 sample rows, as CSV files."""
    import random
    rows = []
    for name in ("train.csv", "test.csv"):
        with open(os.path.join(SAMPLE, name), newline="", encoding="utf-8") as handle:
            rows += list(csv.reader(handle))
    random.Random(seed).shuffle(rows)
    test, train = [], []
    for row in rows:
        (test if sum(1 for r in test if r[0] == row[0]) < 400 else train).append(row)
    os.makedirs(directory, exist_ok=True)
    for name, part in (("train.csv", train), ("test.csv", test)):
        with open(os.path.join(directory, name), "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(part)
    shutil.copy(os.path.join(SAMPLE, "classes.txt"), directory)
    return os.path.join(directory, "train.csv"), os.path.join(directory, "test.csv")


def print_table(title, rows):
    print(f"\n{title}")
    print(f"{'':10} {'trainer':9} {'accuracy':>9} {'wall s':>8} {'train s':>8} {'examples/s':>11}")
    for name, row in rows.items():
        for who in ("ours", "fasttext"):
            m = row[who]
            print(f"{name:10} {who:9} {m['accuracy']:9.4f} {m['wall_seconds']:8.2f} {m['train_seconds']:8.2f} "
                  f"{m['examples_per_second']:11,.0f}")
        r = row["ratio"]
        print(f"{name:10} {'ratio':9} {row['accuracy_gap_points']:+8.2f}p {r['wall_time']:8.2f} {r['train_time']:8.2f} "
              f"{r['examples_per_second']:11.2f}")


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["sample"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    names = list(rows)
    for offset, who in ((-0.2, "ours"), (0.2, "fasttext")):
        positions = [i + offset for i in range(len(names))]
        axes[0].bar(positions, [rows[n][who]["accuracy"] for n in names], width=0.4, label=who)
        axes[1].bar(positions, [rows[n][who]["wall_seconds"] for n in names], width=0.4, label=who)
    for axis, label in zip(axes, ("test accuracy", "wall seconds (median)")):
        axis.set_xticks(range(len(names)), names)
        axis.set_ylabel(label)
        axis.legend()
    axes[0].set_ylim(0.7, 0.9)
    fig.suptitle("AG News sample (real): this trainer vs fastText C++")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resplits", type=int, default=0, help="extra random splits of the sample to check")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "compare_fasttext"))
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="bench-compare-")
    try:
        result = {"settings": SETTINGS, "repeats": args.repeats,
                  "sample": compare(os.path.join(SAMPLE, "train.csv"), os.path.join(SAMPLE, "test.csv"),
                                    args.repeats, scratch)}
        print_table("AG News sample (real, 6,000 train / 1,600 test), medians", result["sample"])
        for seed in range(args.resplits):
            train_csv, test_csv = resplit(seed, os.path.join(scratch, f"split{seed}"))
            result[f"resplit_{seed}"] = compare(train_csv, test_csv, args.repeats, scratch)
            print_table(f"fresh split {seed} of the same 7,600 rows", result[f"resplit_{seed}"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump(result, handle, indent=1)
    plot(result, args.out + ".png")
    print(f"\nwrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
