"""One epoch at full scale, on a SYNTHETIC corpus of Yelp polarity's size: this trainer vs fastText C++.

    python bench/synthetic_scale.py                          # 560,000 train / 38,000 test documents
    python bench/synthetic_scale.py --scale 0.1 --repeats 3  # a quick run on a tenth
    python bench/synthetic_scale.py --dataset amazon_full    # 3,000,000 train / 650,000 test documents

The corpus is SYNTHETIC (data_pipeline/synthetic.py: the real document counts and roughly
the real lengths, Zipf-like words, learnable labels), so accuracy here means nothing; speed
and memory do. Both trainers use the paper's Yelp settings (dim 10, bigrams, bucket 10M,
lr 0.1), one epoch, 2 threads, and each run is a fresh process from a cold start: ours is
cold preprocessing (`shards.preprocess` into an empty cache, in its own process) then
`launch/train.py` on that cache; fastText is the pip package's `train_supervised`
(bench/fasttext_cpp.py), and its preprocessing is its dictionary pass, timed alone
(`train_supervised` with epoch 0, dim 1, no buckets: reading the text and counting words).
Reported per side, medians over --repeats: cold preprocessing documents/s and MB/s of input
text, wall seconds (both our processes together), training seconds, training examples/s,
and peak resident memory (the largest of a side's processes, workers included); and the
ratios ours/fastText. Every process is started by a small wrapper that measures it, since a
child forked from this (large) process would carry this process's peak into its own count.
Writes bench/results/synthetic_scale.json and .png.
"""
import argparse
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
from fasttext_horovod.data_pipeline.datasets import dataset_spec
from fasttext_horovod.data_pipeline.synthetic import SYNTHETIC_MARKER, write_synthetic_dataset
from fasttext_horovod.launch.common import describe_hardware

SETTINGS = {"dim": 10, "word_ngrams": 2, "bucket": 10_000_000, "epoch": 1, "thread": 2}


# Runs a command, then prints its wall seconds, CPU seconds (its processes together) and peak RSS
# (MB) as JSON. Being small,
# it passes almost nothing of its own size to the child's count (see the module docstring).
_MEASURE = r"""
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
stderr = child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "wall_seconds": time.perf_counter() - start,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
                  "stderr": stderr.decode(errors="replace")[-2000:]}))
"""

_PREPROCESS = r"""
import sys
from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess
preprocess(sys.argv[1], CorpusSettings(bucket=int(sys.argv[3]), word_ngrams=int(sys.argv[4])), sys.argv[2],
           int(sys.argv[5]))
"""

_FASTTEXT_DICTIONARY = r"""
import sys, fasttext
fasttext.train_supervised(sys.argv[1], epoch=0, dim=1, bucket=0, wordNgrams=1, thread=int(sys.argv[2]), verbose=0)
"""


def measured(command) -> dict:
    """Wall seconds and peak RSS of `command` run to completion; raises if it fails."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True)
    result = json.loads(done.stdout or "{}")
    if done.returncode != 0 or result.get("code") != 0:
        raise RuntimeError(f"{command[:3]} failed: {result.get('stderr', '')}")
    return result


def preprocessing_rates(run: dict, num_docs: int, num_bytes: int) -> dict:
    """Rates over wall time, and per CPU second: on a shared machine the second says what the
    code costs whatever the load, the first what a user waited."""
    seconds = run["wall_seconds"]
    return {"preprocess_seconds": seconds, "preprocess_docs_per_second": num_docs / seconds,
            "preprocess_mb_per_second": num_bytes / 1e6 / seconds, "preprocess_cpu_seconds": run["cpu_seconds"],
            "preprocess_docs_per_cpu_second": num_docs / run["cpu_seconds"]}


def run_ours(data_root: str, spec, workdir: str, num_docs: int) -> dict:
    """Cold preprocessing into an empty cache, then launch/train.py on it; each a fresh process."""
    metrics_path, cache = os.path.join(workdir, "metrics.json"), os.path.join(workdir, "cache")
    train_csv = spec.train_path(data_root)
    pre = measured([sys.executable, "-c", _PREPROCESS, train_csv, cache, str(SETTINGS["bucket"]),
                    str(SETTINGS["word_ngrams"]), str(spec.num_classes)])
    train = measured([sys.executable, os.path.join(REPO, "launch", "train.py"), "--dataset", spec.name,
                      "--data-root", data_root, "--model-dir", os.path.join(workdir, "model"), "--cache-dir", cache,
                      "--metrics-out", metrics_path, *[f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]])
    corpora = [name for name in os.listdir(cache) if not name.startswith(".")]  # not the builders' .lock
    if len(corpora) != 1:
        raise RuntimeError(f"train.py did not reuse the preprocessed corpus: {corpora}")
    with open(metrics_path) as handle:
        metrics = json.load(handle)
    shutil.rmtree(workdir)
    return {"accuracy": metrics["accuracy"], "wall_seconds": pre["wall_seconds"] + train["wall_seconds"],
            "train_seconds": metrics["train_seconds"], "examples_per_second": metrics["examples_per_second"],
            "peak_rss_mb": max(pre["peak_rss_mb"], train["peak_rss_mb"]),
            **preprocessing_rates(pre, num_docs, os.path.getsize(train_csv))}


def run_fasttext(train_txt: str, test_txt: str, lr: float, num_docs: int) -> dict:
    dictionary = measured([sys.executable, "-c", _FASTTEXT_DICTIONARY, train_txt, str(SETTINGS["thread"])])
    result = train_and_test(train_txt, test_txt, lr=lr, dim=SETTINGS["dim"], epoch=SETTINGS["epoch"],
                            wordNgrams=SETTINGS["word_ngrams"], bucket=SETTINGS["bucket"], thread=SETTINGS["thread"])
    result["examples_per_second"] = SETTINGS["epoch"] * num_docs / result["train_seconds"]
    result.update(preprocessing_rates(dictionary, num_docs, os.path.getsize(train_txt)))
    return result


def medians(runs):
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def plot(result: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = (("preprocess_docs_per_second", "cold preprocessing docs/s"), ("wall_seconds", "wall seconds"),
              ("examples_per_second", "training examples/s"), ("peak_rss_mb", "peak RSS (MB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.5))
    for axis, (key, label) in zip(axes, panels):
        values = [result["ours"][key], result["fasttext"][key]]
        axis.bar(["ours", "fastText C++"], values, color=["tab:blue", "tab:orange"])
        axis.set_title(f"{label}\nratio {result['ratio'][key]:.2f}")
    corpus = result["corpus"]
    fig.suptitle(f"SYNTHETIC {corpus['shape_of']} corpus, {corpus['train_docs']:,} train docs, one epoch, "
                 f"{result['hardware']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="yelp_polarity", help="whose size and shape the corpus has")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real document counts")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "synthetic_scale"))
    args = parser.parse_args()
    spec = dataset_spec(args.dataset)
    load_before = os.getloadavg()
    scratch = tempfile.mkdtemp(prefix="bench-scale-")
    data_root = os.path.join(scratch, "data_synthetic")
    try:
        start = time.perf_counter()
        directory = write_synthetic_dataset(spec, data_root, args.scale)
        generate_seconds = time.perf_counter() - start
        train_txt, test_txt = fasttext_copies(spec.train_path(data_root), spec.test_path(data_root), scratch)
        with open(train_txt, "rb") as handle:
            num_docs = sum(1 for _ in handle)
        ours = [run_ours(data_root, spec, tempfile.mkdtemp(dir=scratch), num_docs) for _ in range(args.repeats)]
        theirs = [run_fasttext(train_txt, test_txt, spec.lr, num_docs) for _ in range(args.repeats)]
        with open(os.path.join(directory, SYNTHETIC_MARKER), encoding="utf-8") as handle:
            marker = handle.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ours_m, theirs_m = medians(ours), medians(theirs)
    keys = ("preprocess_docs_per_second", "preprocess_mb_per_second", "preprocess_docs_per_cpu_second",
            "wall_seconds", "train_seconds", "examples_per_second", "peak_rss_mb")
    result = {
        "corpus": {"SYNTHETIC": True, "shape_of": spec.name, "scale": args.scale, "train_docs": num_docs,
                   "generate_seconds": generate_seconds, "description": marker},
        "settings": {**SETTINGS, "lr": spec.lr}, "repeats": args.repeats, "hardware": describe_hardware(),
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        "ours": ours_m, "fasttext": theirs_m, "ratio": {k: ours_m[k] / theirs_m[k] for k in keys},
        "runs": {"ours": ours, "fasttext": theirs},
        "note": "ratio = ours / fastText: above 1 is slower for times and memory, faster for examples/s",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump(result, handle, indent=1)
    plot(result, args.out + ".png")
    print(f"SYNTHETIC {spec.name}-sized corpus ({num_docs:,} train docs, generated in {generate_seconds:.1f} s), "
          f"one epoch, medians of {args.repeats}, {result['hardware']}")
    print(f"{'':10} {'prep docs/s':>11} {'prep MB/s':>9} {'docs/CPU-s':>10} {'wall s':>9} {'train s':>9} "
          f"{'examples/s':>11} {'peak MB':>9}")
    for who, row in (("ours", ours_m), ("fastText", theirs_m), ("ratio", result["ratio"])):
        fmt = ("{:11.2f} {:9.2f} {:10.2f} {:9.2f} {:9.2f} {:11.2f} {:9.2f}" if who == "ratio"
               else "{:11,.0f} {:9.1f} {:10,.0f} {:9.1f} {:9.1f} {:11,.0f} {:9.0f}")
        print(f"{who:10} " + fmt.format(*(row[k] for k in keys)))
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
