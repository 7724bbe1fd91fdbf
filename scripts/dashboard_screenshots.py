"""Screenshots of each TensorBoard dashboard, for the README (docs/dashboards/*.png).

Trains two small runs on the AG News sample into one logdir, `np1` (one process) and `np2`
(`horovodrun -np 2`, the same global batch), serves the logdir with TensorBoard on
127.0.0.1, and photographs each dashboard with headless Chromium, as a user's browser
shows it. Each PNG is reduced to a 256-colour palette to keep the repository small.

    python scripts/dashboard_screenshots.py [--out docs/dashboards] [--chromium /usr/bin/chromium]

Chromium: `apt-get install -y chromium`.
"""
import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "ag_news_mini"
EPOCHS = 5
TRAIN_FLAGS = ("--train", SAMPLE / "train.csv", "--test", SAMPLE / "test.csv", "--valid-fraction", "0.1",
               "--epoch", EPOCHS, "--lr", "0.25", "--dim", "10", "--word-ngrams", "2", "--bucket", "100000",
               "--log-every", "10")
GLOBAL_BATCH = 64
# (file name, URL fragment, browser window width and height). Custom Scalars without
# smoothing, so each logged value is drawn as it is.
DASHBOARDS = (
    ("custom_scalars", "custom_scalars&_smoothingWeight=0", (1400, 2000)),
    ("time_series", "timeseries", (1400, 1000)),
    ("images", "images", (1500, 950)),
    ("hparams", "hparams", (2500, 330)),
    ("text", "text", (1400, 900)),
)
# Time Series draws with SVG (headless Chromium has no WebGL without a GPU), unsmoothed.
TIME_SERIES_QUERY = "forceSVG=true&smoothing=0"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=20000")
LOAD_TIMEOUT_S = 120


def train(logdir: Path, scratch: Path):
    """`np1` and `np2` runs under `logdir`: the same data, settings and global batch; np2's
    efficiency is measured against np1's rate (--baseline-rate), as bench/scaling.py does."""
    flags = [str(flag) for flag in TRAIN_FLAGS] + ["--cache-dir", str(scratch / "cache")]
    script = str(REPO / "launch" / "train.py")
    np1_metrics = scratch / "np1.json"
    runs = {"np1": lambda: [sys.executable, script, "--batch-size", str(GLOBAL_BATCH), "--metrics-out",
                            str(np1_metrics)],
            "np2": lambda: [str(Path(sys.executable).parent / "horovodrun"), "-np", "2", sys.executable, script,
                            "--batch-size", str(GLOBAL_BATCH // 2), "--baseline-rate",
                            str(json.loads(np1_metrics.read_text())["examples_per_second"])]}
    for name, command in runs.items():
        print(f"training {name}", file=sys.stderr)
        subprocess.run(command() + flags + ["--model-dir", str(scratch / name), "--logdir", str(logdir / name)],
                       cwd=REPO, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def serve(logdir: Path, log) -> tuple:
    """A TensorBoard server for `logdir` that has read both runs to the end; (process, base URL)."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logdir),
                               "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            tags = get_json(base + "/data/plugin/scalars/tags")
            if all(len(get_json(f"{base}/data/plugin/scalars/scalars?run={run}&tag=test/accuracy")) == EPOCHS
                   and "summary/train_seconds" in tags.get(run, {}) for run in ("np1", "np2")):
                return server, base
        except (urllib.error.URLError, ConnectionError, ValueError):
            pass
        time.sleep(1)
    server.terminate()
    raise SystemExit(f"error: tensorboard did not serve both runs within {LOAD_TIMEOUT_S} s")


def screenshot(chromium: str, url: str, size: tuple, path: Path, scratch: Path):
    """`url` as headless Chromium renders it in a fresh profile, saved to `path` as a palette PNG."""
    profile = tempfile.mkdtemp(dir=scratch)
    raw = scratch / (path.stem + ".raw.png")
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                    f"--screenshot={raw}", url],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)
    Image.open(raw).convert("RGB").quantize(256).save(path, optimize=True)


def save_confusion_matrix(base: str, path: Path):
    """The last test confusion matrix of `np2` as TensorBoard serves it, at its own size."""
    images = get_json(f"{base}/data/plugin/images/images?run=np2&tag=test/confusion_matrix&sample=0")
    with urllib.request.urlopen(f"{base}/data/plugin/images/individualImage?{images[-1]['query']}") as response:
        path.write_bytes(response.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboards")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        logdir = scratch / "tb"
        train(logdir, scratch)
        with open(scratch / "tensorboard.log", "wb") as log:
            server, base = serve(logdir, log)
            try:
                for name, fragment, size in DASHBOARDS:
                    path = args.out / f"{name}.png"
                    screenshot(args.chromium, f"{base}/?{TIME_SERIES_QUERY}#{fragment}", size, path, scratch)
                    print(f"{path} ({path.stat().st_size // 1024} KB)")
                save_confusion_matrix(base, args.out / "confusion_matrix.png")
            finally:
                server.terminate()
                server.wait(timeout=15)


if __name__ == "__main__":
    main()
