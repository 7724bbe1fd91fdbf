"""Training examples/s of the large-batch path at 1k-64k documents a step, on a GPU or the CPU.

    python bench/gpu_throughput.py --gpu 0 --train data/yelp_review_full_csv/train.csv
    python bench/gpu_throughput.py                      # CPU smoke test on the bundled AG News sample
    horovodrun -np 4 ... is not needed here: one GPU, one process; README "Large batches" has the recipe

Each batch size is one run of launch/train.py (one process, row-mean SGD, bigrams,
dim 10, bucket 10M) for --epoch epochs on --train; its metrics give training examples/s
over the steps (preprocessing and evaluation excluded). On the CPU the default batches
are small and the run is a smoke test of the same code path, not a GPU number. Writes
bench/results/gpu_throughput.json and .png.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from fasttext_horovod.launch.common import describe_hardware

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
SAMPLE = os.path.join(REPO, "samples", "ag_news_mini", "train.csv")
SETTINGS = ("--dim", "10", "--word-ngrams", "2", "--bucket", "10000000", "--optimizer", "rowmean",
            "--log-every", "1000000")


def run(batch: int, args, workdir: str) -> dict:
    metrics_path = os.path.join(workdir, f"metrics-{batch}.json")
    command = [sys.executable, os.path.join(REPO, "launch", "train.py"), "--train", args.train,
               "--model-dir", os.path.join(workdir, f"model-{batch}"), "--cache-dir", os.path.join(workdir, "cache"),
               "--metrics-out", metrics_path, "--batch-size", str(batch), "--epoch", str(args.epoch), *SETTINGS,
               *(["--gpu", str(args.gpu)] if args.gpu is not None else [])]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        sys.exit(f"batch {batch} failed:\n{done.stderr}")
    with open(metrics_path) as handle:
        metrics = json.load(handle)
    return {"batch": batch, "examples_per_second": metrics["examples_per_second"],
            "train_seconds": metrics["train_seconds"]}


def plot(result: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(5, 3.5))
    rows = result["rows"]
    axis.plot([r["batch"] for r in rows], [r["examples_per_second"] for r in rows], "o-")
    axis.set(xscale="log", xlabel="documents per step", ylabel="training examples / s", ylim=(0, None),
             title=result["device"])
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", type=int, help="GPU index (default: the CPU, as a smoke test)")
    parser.add_argument("--train", default=SAMPLE, help="training file (default: the bundled AG News sample)")
    parser.add_argument("--batches", type=int, nargs="+",
                        help="documents per step (default 1024..65536 on a GPU, 1024 4096 on the CPU)")
    parser.add_argument("--epoch", type=int, default=2)
    args = parser.parse_args()
    args.batches = args.batches or ([1024, 4096, 16384, 65536] if args.gpu is not None else [1024, 4096])
    device = describe_hardware(args.gpu)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as workdir:
        rows = []
        for batch in args.batches:
            rows.append(run(batch, args, workdir))
            print(f"batch {batch:>6,}: {rows[-1]['examples_per_second']:>10,.0f} examples/s", flush=True)
    result = {"device": device, "gpu": args.gpu, "train": args.train, "settings": list(SETTINGS),
              "epoch": args.epoch, "rows": rows}
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, "gpu_throughput")
    with open(out + ".json", "w") as handle:
        json.dump(result, handle, indent=1)
    plot(result, out + ".png")
    print(f"wrote {out}.json and .png", file=sys.stderr)


if __name__ == "__main__":
    main()
