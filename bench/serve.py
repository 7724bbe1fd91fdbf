"""Load test of launch/serve.py on 127.0.0.1, against fastText's in-process predict on the same documents.

    python bench/serve.py                           # trains a model on the AG sample first
    python bench/serve.py --model-dir runs/ag --workers 2 --seconds 5 --repeats 3

For 1, 16 and 64 concurrent clients (each on its own keep-alive connection) sending 1 or 32
AG test documents per request (JSON, k=1), each run sends for --seconds seconds or
--max-requests requests, whichever ends first, after a --warmup not counted, then stops:
requests/s, documents/s, p50/p99 latency; medians of --repeats runs. The clients are one
asyncio process (a minimal keep-alive HTTP/1.1 client) on the same machine as the server, so
they take some of its CPU: these are the numbers of the whole machine. fastText: the same model exported to `.bin` (launch/export.py),
`predict` in a fresh process, one call per 1 or 32 documents, on the same documents already
normalised (the server normalises them itself, fastText cannot). Writes
bench/results/serve.json and .png.
"""
import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "samples", "ag_news_mini")
RESULTS = os.path.join(REPO, "bench", "results")
CLIENTS = (1, 16, 64)
DOCS_PER_REQUEST = (1, 32)
# The model: fastText's supervised defaults but dim 10 and bigrams, as compare_fasttext.py.
TRAIN_SETTINGS = ("--dim", "10", "--word-ngrams", "2", "--epoch", "5", "--lr", "0.25", "--bucket", "2000000")

_FASTTEXT_PREDICT = r"""
import json, sys, time
import fasttext
model = fasttext.load_model(sys.argv[1])
docs = open(sys.argv[2], encoding="utf-8").read().split("\n")
per_call, seconds = int(sys.argv[3]), float(sys.argv[4])
calls = [docs[i:i + per_call] for i in range(0, len(docs) - per_call + 1, per_call)]
latencies, done, start, cpu = [], 0, time.perf_counter(), time.process_time()
while time.perf_counter() - start < seconds:
    for call in calls:
        t = time.perf_counter()
        model.predict(call if per_call > 1 else call[0], k=1)
        latencies.append(time.perf_counter() - t)
    done += len(calls) * per_call
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
latencies.sort()
print(json.dumps({"docs_per_second": done / elapsed, "cpu_us_per_doc": 1e6 * cpu / done, "calls_per_second": len(latencies) / elapsed,
                  "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)]}))
"""


def run_script(script: str, *args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, os.path.join(REPO, "launch", f"{script}.py"), *map(str, args)],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: launch/{script}.py failed: {done.stderr.strip()}")
    return done


def ag_documents():
    with open(os.path.join(SAMPLE, "test.csv"), encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def start_server(model_dir: str, workers: int, log_path: str):
    """serve.py on a free port; (process, port) once it answers /ping."""
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "launch", "serve.py"), "--model-dir", model_dir,
                                "--port", "0", "--workers", str(workers)], stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", open(log_path).read())
        if found:
            if asyncio.run(_answers_ping(f"http://127.0.0.1:{found.group(1)}")):
                return process, int(found.group(1))
        time.sleep(0.2)
    process.kill()
    sys.exit(f"error: serve.py did not start: {open(log_path).read().strip()}")


async def _answers_ping(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/ping") as response:
                return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def _exchange(reader, writer, request: bytes) -> int:
    """Send one pre-encoded request on a keep-alive connection; the response's status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


def cpu_seconds(pids) -> float:
    """CPU seconds the processes' threads have run, from the scheduler's own clock (/proc/*/schedstat:
    exact; the utime of /proc/*/stat is sampled at ticks and misses short bursts)."""
    total = 0
    for pid in pids:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/schedstat") as handle:
                total += int(handle.read().split()[0])
    return total / 1e9


def worker_pids(server_pid: int):
    with open(f"/proc/{server_pid}/task/{server_pid}/children") as handle:
        return [int(pid) for pid in handle.read().split()]


async def load(port: int, documents, clients: int, per_request: int, seconds: float, max_requests: int,
               warmup: float, server_pids) -> dict:
    """`clients` closed-loop clients, each sending its next request as soon as it has an answer.

    A minimal HTTP/1.1 client (pre-encoded requests, one keep-alive connection per client),
    so that as little as possible of the shared CPU goes to making load.
    """
    requests = []
    for i in range(0, len(documents) - per_request + 1, per_request):
        body = json.dumps({"instances": documents[i:i + per_request], "configuration": {"k": 1}}).encode()
        requests.append(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    latencies, failures = [], 0
    measuring = False

    async def client(index: int, connection, stop_at: float):
        nonlocal failures
        reader, writer = connection
        n = index
        while time.perf_counter() < stop_at and len(latencies) < max_requests:
            start = time.perf_counter()
            status = await _exchange(reader, writer, requests[n % len(requests)])
            if measuring:
                latencies.append(time.perf_counter() - start)
                failures += status != 200
            n += clients

    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    await asyncio.gather(*(client(i, c, time.perf_counter() + warmup) for i, c in enumerate(connections)))
    measuring = True
    server_cpu, client_cpu, began = cpu_seconds(server_pids), time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(i, c, began + seconds) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - began
    server_cpu, client_cpu = cpu_seconds(server_pids) - server_cpu, time.process_time() - client_cpu
    for _, writer in connections:
        writer.close()
    latencies.sort()
    return {"requests_per_second": len(latencies) / elapsed, "docs_per_second": len(latencies) * per_request / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "requests": len(latencies), "failures": failures,
            # CPU per document, which contention from other users inflates far less than wall time.
            "server_cpu_us_per_doc": 1e6 * server_cpu / (len(latencies) * per_request),
            "client_cpu_us_per_doc": 1e6 * client_cpu / (len(latencies) * per_request)}


def fasttext_predict(model_bin: str, docs_path: str, per_call: int, seconds: float) -> dict:
    done = subprocess.run([sys.executable, "-c", _FASTTEXT_PREDICT, model_bin, docs_path, str(per_call), str(seconds)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def medians(runs):
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (speed, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for per_request, color in zip(DOCS_PER_REQUEST, ("tab:blue", "tab:orange")):
        rows = [row for row in result["server"] if row["docs_per_request"] == per_request]
        speed.plot([r["clients"] for r in rows], [r["docs_per_second"] for r in rows], "o-", color=color,
                   label=f"serve.py, {per_request} doc(s)/request")
        latency.plot([r["clients"] for r in rows], [r["p99_ms"] for r in rows], "o-", color=color,
                     label=f"p99, {per_request} doc(s)/request")
        latency.plot([r["clients"] for r in rows], [r["p50_ms"] for r in rows], "o:", color=color,
                     label=f"p50, {per_request} doc(s)/request")
        speed.axhline(result["fasttext"][str(per_request)]["docs_per_second"], color=color, ls="--",
                      label=f"fastText predict in-process, {per_request} doc(s)/call")
    speed.axhline(20000, color="gray", ls=":", label="target: 20k docs/s (64 clients x 32 docs)")
    latency.axhline(50, color="gray", ls=":", label="target: p99 50 ms (16 clients x 1 doc)")
    for axis, label in ((speed, "documents/s"), (latency, "latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(CLIENTS, [str(c) for c in CLIENTS])
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
    fig.suptitle(f"serve.py --workers {result['workers']} on 127.0.0.1, {result['hardware']} (shared, contended)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="a trained model (default: train one on the AG sample)")
    parser.add_argument("--workers", type=int, default=2, help="serve.py --workers (default: one per core of 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run, at most")
    parser.add_argument("--max-requests", type=int, default=50_000, help="measured requests per run, at most")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(RESULTS, "serve.json"))
    args = parser.parse_args()
    from fasttext_horovod.launch.common import describe_hardware
    from fasttext_horovod.data_pipeline.readers import prepare_text
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as work:
        model_dir = args.model_dir or os.path.join(work, "model")
        if not args.model_dir:
            run_script("train", "--train", os.path.join(SAMPLE, "train.csv"), "--model-dir", model_dir,
                       "--cache-dir", os.path.join(work, "cache"), *TRAIN_SETTINGS)
        model_bin = os.path.join(work, "model.bin")
        run_script("export", "--model-dir", model_dir, "--fasttext", model_bin)
        documents = ag_documents()
        docs_path = os.path.join(work, "docs.txt")
        with open(docs_path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(prepare_text(d, True).decode("utf-8") for d in documents))
        result = {"workers": args.workers, "hardware": describe_hardware(), "seconds": args.seconds,
                  "repeats": args.repeats, "documents": "samples/ag_news_mini/test.csv", "fasttext": {}, "server": []}
        for per_request in DOCS_PER_REQUEST:
            runs = [fasttext_predict(model_bin, docs_path, per_request, args.seconds) for _ in range(args.repeats)]
            result["fasttext"][str(per_request)] = medians(runs)
            print(f"fastText predict, {per_request} doc(s)/call: {medians(runs)['docs_per_second']:,.0f} docs/s, "
                  f"CPU/doc {medians(runs)['cpu_us_per_doc']:.1f} us", flush=True)
        process, port = start_server(model_dir, args.workers, os.path.join(work, "serve.log"))
        workers = worker_pids(process.pid)
        try:
            for per_request in DOCS_PER_REQUEST:
                for clients in CLIENTS:
                    runs = [asyncio.run(load(port, documents, clients, per_request, args.seconds, args.max_requests,
                                             args.warmup, workers)) for _ in range(args.repeats)]
                    row = {"clients": clients, "docs_per_request": per_request, **medians(runs)}
                    ratio = row["docs_per_second"] / result["fasttext"][str(per_request)]["docs_per_second"]
                    row["docs_per_second_vs_fasttext"] = ratio
                    result["server"].append(row)
                    print(f"{clients:3d} clients x {per_request:2d} docs: {row['requests_per_second']:8,.0f} req/s "
                          f"{row['docs_per_second']:8,.0f} docs/s (x{ratio:.3f} fastText)  p50 {row['p50_ms']:6.1f} ms  "
                          f"p99 {row['p99_ms']:6.1f} ms  CPU/doc server {row['server_cpu_us_per_doc']:.0f} us "
                          f"client {row['client_cpu_us_per_doc']:.0f} us  failures {row['failures']:.0f}", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            result["server_exit_status"] = process.wait(timeout=120)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    plot(result, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out} and {os.path.splitext(args.out)[0]}.png")


if __name__ == "__main__":
    main()
