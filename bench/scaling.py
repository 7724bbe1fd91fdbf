"""Horovod data parallelism on this machine: throughput and scaling efficiency for np = 1, 2, ...

    python bench/scaling.py                                  # the bundled real AG News sample
    python bench/scaling.py --synthetic ag_news --scale 0.5  # a bigger SYNTHETIC corpus
    python bench/scaling.py --max-np 4 --controller gloo --repeats 5 -- --fp16-allreduce
    python bench/scaling.py --fair --max-np 2                # per-core fair, 64/512/2048 per rank

Every run trains the same data with the same settings and the same --batch-size per rank
(weak scaling: N ranks take N times the documents per step): np=1 is one plain process,
np=N is `horovodrun -np N`. All use row-mean SGD, the rule for the large global batches
Horovod makes (auto would switch rules between np=1 and np=N). Runs are
interleaved (1, 2, ..., 1, 2, ...) so a burst of load from elsewhere hits every np alike,
and medians over --repeats are reported:

* examples/s over the training steps, and the speed-up over np=1;
* efficiency = examples/s at np=N / (N x examples/s at np=1), from the np=1 runs, and the
  efficiency each np=N run measured itself against its rank 0 timed alone (scaling.py);
* compute and communicate milliseconds per step (the exchange, including waiting for the
  slower rank), and bytes each rank receives per step: the sparse exchange against what a
  dense all-reduce of both gradient matrices would move.

--fair gives every process one MXNet thread and no prefetching process (`--thread 1
--prefetch off`): np=N then uses N cores where np=1 uses one, so efficiency measures what
Horovod costs, not how MXNet's threads share cores; it runs each of --batch-sizes (default 64, 512, 2,048 documents per rank). Horovod's
knobs (HOROVOD_CYCLE_TIME, HOROVOD_CACHE_CAPACITY, ...) pass through the environment and
are recorded.

Writes bench/results/scaling.json and scaling.png (throughput and efficiency against
workers). With --synthetic the corpus is SYNTHETIC (data_pipeline/synthetic.py) and every
output says so.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
RESULTS = os.path.join(REPO, "bench", "results")
SAMPLE = os.path.join(REPO, "samples", "ag_news_mini", "train.csv")
# The paper's AG News settings; two epochs are enough for a steady rate.
SETTINGS = ("--dim", "10", "--word-ngrams", "2", "--bucket", "10000000", "--lr", "0.25", "--epoch", "2",
            "--optimizer", "rowmean")
MEDIAN_KEYS = ("examples_per_second", "tokens_per_second", "efficiency", "single_worker_examples_per_second",
               "compute_seconds_per_step", "communicate_seconds_per_step", "communicate_fraction", "bytes_per_step",
               "dense_allreduce_bytes_per_step")


def train_once(num_proc: int, batch_size: int, data_args: list, args, workdir: str) -> dict:
    """One run of launch/train.py with `num_proc` ranks; its metrics JSON plus the load average."""
    metrics_path = os.path.join(workdir, f"metrics-np{num_proc}.json")
    train = [sys.executable, os.path.join(REPO, "launch", "train.py"), *data_args, "--model-dir",
             os.path.join(workdir, f"model-np{num_proc}"), "--cache-dir", os.path.join(workdir, "cache"),
             "--metrics-out", metrics_path, "--batch-size", str(batch_size), *SETTINGS,
             *(["--thread", "1", "--prefetch", "off"] if args.fair else []), *args.train_args]
    command = train if num_proc == 1 else [HOROVODRUN, "-np", str(num_proc), f"--{args.controller}", *train]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        sys.exit(f"np={num_proc} failed:\n{done.stdout}\n{done.stderr}")
    with open(metrics_path) as handle:
        metrics = json.load(handle)
    metrics["load_average_1min"] = os.getloadavg()[0]
    return metrics


def summarize(runs_by_np: dict) -> dict:
    """Medians per np, speed-up and efficiency against the np=1 median."""
    summary = {}
    for num_proc, runs in runs_by_np.items():
        summary[num_proc] = {key: statistics.median(run[key] for run in runs)
                             for key in MEDIAN_KEYS if all(key in run for run in runs)}
    single = summary[1]["examples_per_second"]
    for num_proc, row in summary.items():
        row["speedup"] = row["examples_per_second"] / single
        row["efficiency_vs_np1"] = row["speedup"] / num_proc
        row["sparse_to_dense"] = (row["bytes_per_step"] / row["dense_allreduce_bytes_per_step"]
                                  if row["dense_allreduce_bytes_per_step"] else None)
    return summary


def table(summary: dict, label: str) -> str:
    lines = [f"Horovod scaling on {label}", "",
             "| np | examples/s | speed-up | efficiency vs np=1 | efficiency (in-run) | compute ms/step "
             "| communicate ms/step | bytes/step sparse | bytes/step dense all-reduce | sparse/dense |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for num_proc, row in summary.items():
        in_run = f"{row['efficiency']:.1%}" if "efficiency" in row else "-"
        ratio = f"{row['sparse_to_dense']:.4%}" if row["sparse_to_dense"] is not None else "-"
        lines.append(f"| {num_proc} | {row['examples_per_second']:,.0f} | {row['speedup']:.2f} | "
                     f"{row['efficiency_vs_np1']:.1%} | {in_run} | {row['compute_seconds_per_step'] * 1e3:.2f} | "
                     f"{row['communicate_seconds_per_step'] * 1e3:.2f} | {row['bytes_per_step']:,.0f} | "
                     f"{row['dense_allreduce_bytes_per_step']:,.0f} | {ratio} |")
    return "\n".join(lines)


def plot(summaries: dict, label: str, path: str):
    """Throughput and efficiency against workers, one line per batch size per rank."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (throughput, efficiency) = plt.subplots(1, 2, figsize=(10, 4))
    for batch, summary in summaries.items():
        workers = sorted(summary)
        rates = [summary[n]["examples_per_second"] for n in workers]
        line, = throughput.plot(workers, rates, "o-", label=f"{batch}/rank")
        throughput.plot(workers, [rates[0] * n for n in workers], "--", color=line.get_color(), alpha=0.5)
        efficiency.plot(workers, [summary[n]["efficiency_vs_np1"] for n in workers], "o-", color=line.get_color(),
                        label=f"{batch}/rank vs np=1 runs")
        in_run = [n for n in workers if "efficiency" in summary[n]]
        efficiency.plot(in_run, [summary[n]["efficiency"] for n in in_run], "s:", color=line.get_color(),
                        label=f"{batch}/rank in-run")
    throughput.set(xlabel="workers (ranks)", ylabel="examples / s (dashed: linear)", xticks=workers, ylim=(0, None),
                   title="throughput")
    throughput.legend(fontsize=7)
    efficiency.axhline(0.9, color="grey", linestyle=":", label="90%")
    efficiency.set(xlabel="workers (ranks)", ylabel="efficiency", xticks=workers, ylim=(0, 1.1), title="efficiency")
    efficiency.legend(fontsize=7)
    figure.suptitle(label, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def synthetic_data(dataset: str, scale: float, workdir: str) -> list:
    """Write a SYNTHETIC corpus with launch/synthesize.py; train.py arguments that use it."""
    root = os.path.join(workdir, "data_synthetic")
    subprocess.run([sys.executable, os.path.join(REPO, "launch", "synthesize.py"), "--dataset", dataset,
                    "--data-root", root, "--scale", str(scale)], cwd=REPO, check=True, capture_output=True)
    return ["--dataset", dataset, "--data-root", root]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=SAMPLE, help="training file (default: the bundled real AG News sample)")
    parser.add_argument("--synthetic", metavar="DATASET", help="instead, a SYNTHETIC corpus shaped like DATASET")
    parser.add_argument("--scale", type=float, default=0.1, help="with --synthetic: fraction of the real size")
    parser.add_argument("--max-np", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="documents per step per rank, each measured "
                        "(default 64; with --fair 64 512 2048)")
    parser.add_argument("--fair", action="store_true", help="one MXNet thread per process (per-core fair)")
    parser.add_argument("--controller", choices=("gloo", "mpi"), default="mpi", help="horovodrun's default: mpi")
    parser.add_argument("train_args", nargs="*", help="more launch/train.py flags, after --")
    args = parser.parse_args()
    args.batch_sizes = args.batch_sizes or ([64, 512, 2048] if args.fair else [64])
    os.makedirs(RESULTS, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as workdir:
        if args.synthetic:
            data_args = synthetic_data(args.synthetic, args.scale, workdir)
            label = f"SYNTHETIC {args.synthetic} corpus (scale {args.scale}), not real text"
        else:
            data_args = ["--train", args.train]
            label = f"real data: {os.path.relpath(args.train, REPO)}"
        label += f", {args.controller}, {os.cpu_count()} cores" + (", 1 thread per process" if args.fair else "")
        counts = range(1, args.max_np + 1)
        runs = {batch: {n: [] for n in counts} for batch in args.batch_sizes}
        for repeat in range(args.repeats):
            for batch in args.batch_sizes:
                for num_proc in counts:
                    runs[batch][num_proc].append(train_once(num_proc, batch, data_args, args, workdir))
                    print(f"repeat {repeat + 1}/{args.repeats} batch {batch}/rank np={num_proc}: "
                          f"{runs[batch][num_proc][-1]['examples_per_second']:,.0f} examples/s", file=sys.stderr)
    summaries = {batch: summarize(by_np) for batch, by_np in runs.items()}
    for batch, summary in summaries.items():
        print(table(summary, f"{label}; batch {batch}/rank"))
    name = "scaling_fair" if args.fair else "scaling"
    horovod_env = {key: value for key, value in os.environ.items() if key.startswith("HOROVOD_")}
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as handle:
        json.dump({"label": label, "synthetic": bool(args.synthetic), "settings": list(SETTINGS), "fair": args.fair,
                   "batch_sizes_per_rank": args.batch_sizes, "controller": args.controller,
                   "cpu_count": os.cpu_count(), "horovod_env": horovod_env, "train_args": args.train_args,
                   "summary": summaries, "runs": runs}, handle, indent=1)
    plot(summaries, label, os.path.join(RESULTS, f"{name}.png"))
    print(f"wrote {os.path.join(RESULTS, name)}.json and .png", file=sys.stderr)


if __name__ == "__main__":
    main()
