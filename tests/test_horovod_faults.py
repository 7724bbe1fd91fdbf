"""A rank that dies or fails stops the whole job quickly and loudly, and --resume recovers.

Real `horovodrun -np 2` jobs on real AG News rows: a rank killed with SIGKILL mid-training,
a rank whose shard was damaged after preprocessing, and runs resumed with another number
of ranks than they were checkpointed with. This file is also a Horovod worker whose rank 1
raises between gradient exchanges (`raise_between_exchanges`).
"""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from conftest import AG_NEWS
from horovod_jobs import (CONTROLLERS, REPO, TRAIN_SETTINGS, assert_same_weights, horovodrun_command, run,
                          train_command)

from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess
from fasttext_horovod.distributed.training import resume_batch
from fasttext_horovod.model.checkpoint import load_checkpoint

STOP_WITHIN_S = 60


def train_args(model_dir, cache_dir, batch_size, *extra):
    return ("--train", AG_NEWS / "train.csv", "--test", AG_NEWS / "test.csv", "--model-dir", model_dir,
            "--cache-dir", cache_dir, "--metrics-out", model_dir / "metrics.json", "--batch-size", batch_size,
            *TRAIN_SETTINGS, *extra)


def accuracy(model_dir) -> float:
    return json.loads((model_dir / "metrics.json").read_text())["accuracy"]


def checkpoint_meta(model_dir) -> dict:
    return load_checkpoint(str(model_dir / "checkpoint.npz"))[1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One process, global batch 64, never stopped: what every recovered run is compared with."""
    root = tmp_path_factory.mktemp("uninterrupted")
    done = run(train_command("", 1, *train_args(root / "model", root / "cache", 64)))
    assert done.returncode == 0, done.stderr
    return root / "model"


def start_after_first_checkpoint(command, model_dir) -> subprocess.Popen:
    """Start `command`; return once its first checkpoint (end of epoch 1) is on disk."""
    job = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace")
    deadline = time.monotonic() + 120
    while not (model_dir / "checkpoint.npz").exists():
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0]
        time.sleep(0.02)
    return job


def rank_process(job: subprocess.Popen, rank: int) -> psutil.Process:
    """The process of `rank` among the job's descendants (the launchers set its rank in the environment)."""
    for child in psutil.Process(job.pid).children(recursive=True):
        try:
            environ, cmdline = child.environ(), " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "launch/train.py" in cmdline and str(rank) in (environ.get("HOROVOD_RANK"),
                                                          environ.get("OMPI_COMM_WORLD_RANK")):
            return child
    raise AssertionError(f"no process of rank {rank} under {job.pid}")


@pytest.mark.horovod
@pytest.mark.slow
@pytest.mark.parametrize("controller", CONTROLLERS)
def test_killed_rank_stops_the_job_and_a_single_process_resumes_it(tmp_path, controller, uninterrupted):
    """SIGKILL on rank 1 after epoch 1: the job exits non-zero within a minute naming rank 1 and
    the signal; the epoch-1 checkpoint is intact; one process (batch 64 = 2 x 32) finishes the run."""
    model_dir, cache = tmp_path / "model", tmp_path / "cache"
    job = start_after_first_checkpoint(train_command(controller, 2, *train_args(model_dir, cache, 32)), model_dir)
    rank_process(job, 1).send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    output, _ = job.communicate(timeout=STOP_WITHIN_S)
    assert time.monotonic() - killed_at < STOP_WITHIN_S
    assert job.returncode != 0, output
    named = {"gloo": "Process 1 exit with status code 137", "mpi": "process rank 1 with PID"}[controller]
    assert named in output and ("137" in output or "signal 9" in output), output

    meta = checkpoint_meta(model_dir)
    assert not meta["finished"] and 1 <= meta["progress"]["epoch"] < 5 and meta["world_size"] == 2

    resumed = run(train_command("", 1, *train_args(model_dir, cache, 64, "--resume")))
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint_meta(model_dir)["finished"]
    assert abs(accuracy(model_dir) - accuracy(uninterrupted)) <= 0.005


@pytest.mark.horovod
@pytest.mark.slow
def test_run_stopped_mid_epoch_resumes_under_two_ranks_with_the_same_weights(tmp_path, uninterrupted):
    """SIGTERM stops one process mid-epoch with a checkpoint; two ranks (2 x 32 = 64) finish the
    run from that exact position and end where the unstopped run ended."""
    model_dir, cache = tmp_path / "model", tmp_path / "cache"
    job = start_after_first_checkpoint(train_command("", 1, *train_args(model_dir, cache, 64)), model_dir)
    job.send_signal(signal.SIGTERM)
    output, _ = job.communicate(timeout=STOP_WITHIN_S)
    assert job.returncode == 130, output
    assert checkpoint_meta(model_dir)["progress"]["batch"] > 0  # mid-epoch

    resumed = run(train_command("gloo", 2, *train_args(model_dir, cache, 32, "--resume")))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_same_weights(model_dir, uninterrupted)
    assert checkpoint_meta(model_dir)["world_size"] == 2


def test_resume_position_is_kept_in_documents_when_the_global_batch_changes():
    """Batch 10 of 64 documents = 640 documents trained = batch 5 of 128; a partial batch is redone."""
    assert resume_batch(10, 64, 128) == 5
    assert resume_batch(10, 64, 32) == 20
    assert resume_batch(3, 64, 128) == 1  # 192 documents: batch 1 ends at 256, so 64 are trained again


@pytest.mark.horovod
@pytest.mark.slow
def test_damaged_shard_stops_every_rank_with_its_name(tmp_path):
    """Rank 1's shard corrupted after preprocessing: rank 1 names the shard, rank 0 stops too."""
    cache = tmp_path / "cache"
    corpus = preprocess(str(AG_NEWS / "train.csv"), CorpusSettings(bucket=100000, word_ngrams=2), str(cache), 4)
    shard_ids = f"{corpus.directory}/shard-00001.ids.npy"
    ids = np.load(shard_ids)
    ids[len(ids) // 2] = 2 ** 30  # a row far past the table: MXNet's take would clip it silently
    np.save(shard_ids, ids)

    started = time.monotonic()
    done = run(train_command("mpi", 2, *train_args(tmp_path / "model", cache, 32)), timeout=STOP_WITHIN_S)
    assert time.monotonic() - started < STOP_WITHIN_S
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "error: rank 1: " in output and "shard 1 is damaged" in output, output
    assert "error: rank 0: stopped because another rank failed" in output, output  # not training on garbage
    assert "Traceback" not in output, output
    assert not (tmp_path / "model" / "checkpoint.npz").exists()


def raise_between_exchanges():
    """This file as a Horovod worker: rank 1 raises before its 6th exchange, rank 0 goes on."""
    from fasttext_horovod.launch.common import run_cli

    def main():
        import mxnet as mx

        from fasttext_horovod.data_pipeline.errors import InputError
        from fasttext_horovod.distributed.exchange import GradientExchange
        from fasttext_horovod.distributed.world import init_world
        world = init_world()
        print(f"rank {world.rank}: exchanging through {'MPI' if world.mpi else 'Horovod'}", flush=True)
        exchange = GradientExchange(world, (100, 4))
        for step in range(100):
            if world.rank == 1 and step == 5:
                raise InputError("shard", "damaged at step 5")
            exchange.exchange(np.arange(10) + world.rank, mx.nd.ones((10, 4)), mx.nd.ones((3, 4)), np.array([1]))

    run_cli(main)


@pytest.mark.horovod
@pytest.mark.slow
def test_rank_raising_between_exchanges_stops_the_rank_waiting_in_mpi():
    """Under MPI a step's bytes go through a raw MPI collective, which cannot learn that a peer
    stopped: rank 0, on to its next exchange, still stops with one line instead of waiting there."""
    done = run(horovodrun_command("mpi", 2, sys.executable, __file__), timeout=2 * STOP_WITHIN_S)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank 0: exchanging through MPI" in output, output
    assert "error: rank 1: shard: damaged at step 5" in output, output
    assert "error: rank 0: stopped because another rank failed" in output, output
    assert "Traceback" not in output, output


if __name__ == "__main__":
    raise_between_exchanges()
