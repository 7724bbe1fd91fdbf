"""The input pipeline off the critical path: what a step loop pays for its batches, with and
without the prefetching process, and what that does to training examples/s.

    python bench/input_pipeline.py                                  # the bundled AG News sample
    python bench/input_pipeline.py --train ../shared/data/debian_packages/train.csv --repeats 3

Two measurements per batch size (documents a step, one process):

* main-process CPU milliseconds per batch: assembling it in the loop (`BatchStream.epoch`)
  against taking it ready from the prefetching process (`PrefetchingStream.epoch`: a pipe
  read and an unpickle), over one epoch each; `time.process_time`, so other load on the
  machine does not count;
* training examples/s of `launch/train.py` with `--prefetch off` and `--prefetch on`, the
  runs interleaved (off, on, off, on, ...) so load from elsewhere hits both alike; medians.

Settings: the paper's (dim 10, bigrams, bucket 10M), the rule `--optimizer auto` picks for
the batch. Writes bench/results/input_pipeline.json and .png.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from fasttext_horovod.data_pipeline.batching import BatchStream
from fasttext_horovod.data_pipeline.prefetch import PrefetchingStream
from fasttext_horovod.data_pipeline.shards import ShardedCorpus
from fasttext_horovod.launch.common import describe_hardware

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "samples", "ag_news_mini", "train.csv")
SETTINGS = ("--dim", "10", "--word-ngrams", "2", "--bucket", "10000000", "--log-every", "1000000")


def train(train_path: str, batch: int, prefetch: str, epoch: int, workdir: str) -> float:
    """Training examples/s of one run (preprocessing cached, evaluation excluded)."""
    metrics_path = os.path.join(workdir, "metrics.json")
    command = [sys.executable, os.path.join(REPO, "launch", "train.py"), "--train", train_path,
               "--model-dir", os.path.join(workdir, f"model-{batch}-{prefetch}"),
               "--cache-dir", os.path.join(workdir, "cache"), "--metrics-out", metrics_path,
               "--batch-size", str(batch), "--epoch", str(epoch), "--prefetch", prefetch, *SETTINGS]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        sys.exit(f"batch {batch} --prefetch {prefetch} failed:\n{done.stderr}")
    with open(metrics_path) as handle:
        return json.load(handle)["examples_per_second"]


def cpu_ms_per_batch(batches) -> float:
    start, count = time.process_time(), sum(1 for _ in batches)
    return (time.process_time() - start) / count * 1e3


def loop_costs(corpus_dir: str, batch: int) -> dict:
    """Main-process CPU per batch, assembled in the loop and taken prefetched, over one epoch each."""
    corpus = ShardedCorpus(corpus_dir)
    stream = BatchStream({k: corpus.shard(k) for k in range(corpus.num_shards)}, corpus.docs_per_shard, batch, 0)
    assembled = cpu_ms_per_batch(stream.epoch(0))
    with PrefetchingStream(stream) as prefetched:
        taken = cpu_ms_per_batch(prefetched.epoch(1))
    return {"assemble_ms_per_batch": assembled, "take_prefetched_ms_per_batch": taken}


def plot(result: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    labels = [str(r["batch"]) for r in rows]
    positions = range(len(rows))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.38
    left.bar([p - width / 2 for p in positions], [r["assemble_ms_per_batch"] for r in rows], width,
             label="assembled in the loop")
    left.bar([p + width / 2 for p in positions], [r["take_prefetched_ms_per_batch"] for r in rows], width,
             label="taken from the prefetching process")
    left.set(xticks=list(positions), xticklabels=labels, xlabel="documents per step",
             ylabel="main-process CPU ms per batch", title="what the step loop pays for a batch")
    left.legend()
    right.bar([p - width / 2 for p in positions], [r["examples_per_second_prefetch_off"] for r in rows], width,
              label="--prefetch off")
    right.bar([p + width / 2 for p in positions], [r["examples_per_second_prefetch_on"] for r in rows], width,
              label="--prefetch on")
    right.set(xticks=list(positions), xticklabels=labels, xlabel="documents per step",
              ylabel="training examples / s", title=f"median of {result['repeats']} run(s) each")
    right.legend()
    figure.suptitle(f"{os.path.basename(os.path.dirname(result['train']))}, {result['hardware']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=SAMPLE, help="training file (default: the bundled AG News sample)")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1024], help="documents per step")
    parser.add_argument("--epoch", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "input_pipeline"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-input-") as workdir:
        for batch in args.batches:
            rates = {"off": [], "on": []}
            for _ in range(args.repeats):
                for prefetch in rates:
                    rates[prefetch].append(train(args.train, batch, prefetch, args.epoch, workdir))
            corpus_dir, = glob.glob(os.path.join(workdir, "cache", "*", "meta.json"))
            row = {"batch": batch, **loop_costs(os.path.dirname(corpus_dir), batch),
                   **{f"examples_per_second_prefetch_{k}": statistics.median(v) for k, v in rates.items()},
                   "runs": rates}
            rows.append(row)
            print(f"batch {batch:>5}: loop pays {row['assemble_ms_per_batch']:.3f} ms/batch assembling, "
                  f"{row['take_prefetched_ms_per_batch']:.3f} ms taking it prefetched; examples/s "
                  f"{row['examples_per_second_prefetch_off']:,.0f} off, {row['examples_per_second_prefetch_on']:,.0f} on",
                  flush=True)
    result = {"train": os.path.abspath(args.train), "hardware": describe_hardware(), "settings": list(SETTINGS),
              "epoch": args.epoch, "repeats": args.repeats, "load_average_1min": os.getloadavg()[0], "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump(result, handle, indent=1)
    plot(result, args.out + ".png")
    print(f"wrote {args.out}.json and .png", file=sys.stderr)


if __name__ == "__main__":
    main()
