"""Shared fixtures: the repository, the bundled AG News sample, and a CLI runner.

The end-to-end tests run the real entry points (`launch/*.py`) as subprocesses, as a
user would, on real AG News rows.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fasttext_horovod.launch.common import configure_mxnet

# In-process training runs MXNet as the CLI does on the CPU, set before anything imports mxnet.
configure_mxnet(threads=None, gpu=None)

REPO = Path(__file__).resolve().parents[1]
AG_NEWS = REPO / "samples" / "ag_news_mini"

# Small and fast: a tiny vector size and hash table.
TINY_SETTINGS = ("--epoch", "2", "--dim", "5", "--bucket", "10000", "--word-ngrams", "2", "--lr", "0.25")


def run_cli(script: str, *args, input=None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `launch/<script>.py ARGS` with this interpreter from the repository root.

    `input` (bytes) is fed to stdin; stdout and stderr come back as text, undecodable
    bytes replaced, so a test can read them whatever the program wrote.
    """
    command = [sys.executable, str(REPO / "launch" / f"{script}.py"), *map(str, args)]
    done = subprocess.run(command, cwd=REPO, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(done.args, done.returncode,
                                       done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))


def assert_clean_failure(done, *fragments) -> str:
    """The run failed with exactly one `error:` line holding every fragment, and nothing else."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert "MXNetError" not in done.stderr and "Stack trace" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    stray = [line for line in lines if not line.startswith(("error:", "progress "))]
    assert stray == [], done.stderr
    assert done.stdout == "", done.stdout
    return errors[0]


def assert_nothing_written(model_dir: Path, cache_dir: Path = None):
    """No checkpoint, no temporary checkpoint, no half-built corpus."""
    if model_dir.exists():
        assert not (model_dir / "checkpoint.npz").exists()
        assert list(model_dir.glob(".tmp-*")) == []
    if cache_dir is not None and cache_dir.exists():
        assert list(cache_dir.glob(".building-*")) == []


def first_case_in_dev_tier(cases):
    """Parameters for a test whose cases each run a command (about 1.5 s of MXNet start-up
    apiece): the first case runs in the development tier, the others are `slow` (the whole
    suite runs them all)."""
    return [case if i == 0 else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow)
            for i, case in enumerate(cases)]


def write_sample(directory: Path, train_rows: int, test_rows: int) -> Path:
    """The first rows of the real train/test CSVs, with classes.txt beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        with open(AG_NEWS / name, "rb") as source:
            lines = [line for _, line in zip(range(rows), source)]
        assert len(lines) == rows, f"{AG_NEWS / name} has fewer than {rows} rows"
        (directory / name).write_bytes(b"".join(lines))
    shutil.copy(AG_NEWS / "classes.txt", directory / "classes.txt")
    return directory


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """train.csv (600 real rows), test.csv (200 real rows) and classes.txt."""
    return write_sample(tmp_path_factory.mktemp("tiny_data"), 600, 200)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_data_dir) -> Path:
    """A model trained once per session on `tiny_data_dir`; tests must not modify it."""
    root = tmp_path_factory.mktemp("tiny_model")
    model_dir = root / "model"
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--test", tiny_data_dir / "test.csv",
                   "--model-dir", model_dir, "--logdir", model_dir / "tb", "--cache-dir", root / "cache",
                   "--metrics-out", model_dir / "metrics.json",
                   *TINY_SETTINGS)
    assert done.returncode == 0, done.stderr
    assert (model_dir / "checkpoint.npz").is_file()
    return model_dir
