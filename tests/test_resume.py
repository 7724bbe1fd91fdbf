"""Checkpoints: a run stopped mid-epoch and resumed ends with the weights of an unstopped run."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from horovod_jobs import assert_same_optimizer_state, assert_same_weights, horovodrun_command, run

from fasttext_horovod.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # each test trains to a checkpoint and back


def train_command(data_dir, model_dir, cache_dir, *extra):
    return [sys.executable, str(REPO / "launch" / "train.py"), "--train", str(data_dir / "train.csv"),
            "--model-dir", str(model_dir), "--cache-dir", str(cache_dir), "--epoch", "12", "--dim", "5",
            "--bucket", "20000", "--word-ngrams", "2", "--lr", "0.25", "--batch-size", "8", "--seed", "3", *extra]


def checkpoint(model_dir):
    return load_checkpoint(str(model_dir / "checkpoint.npz"))


def stop_mid_run(command, model_dir):
    """Start `command`, SIGTERM it once it wrote its first checkpoint; returns that checkpoint's metadata."""
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (model_dir / "checkpoint.npz").exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr.decode()
    assert "continue with --resume" in stderr.decode()
    _, meta = checkpoint(model_dir)
    assert not meta["finished"]
    return meta


OPTIMIZER_STATE = {"sgd": (), "adagrad": ("row_history", "output_history"), "rowmean": ("output_history",),
                   "nesterov": ("row_velocity", "row_last_step", "optimizer_step", "output_history")}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_STATE))
def test_resume_gives_same_weights(tmp_path, tiny_data_dir, optimizer):
    """SIGTERM mid-run saves a checkpoint at the step boundary; --resume then matches bit for bit,
    optimizer state included."""
    cache = tmp_path / "cache"
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    extra = ("--optimizer", optimizer)
    subprocess.run(train_command(tiny_data_dir, whole, cache, *extra), check=True, capture_output=True, cwd=REPO)
    assert stop_mid_run(train_command(tiny_data_dir, stopped, cache, *extra), stopped)["progress"]["epoch"] < 12

    subprocess.run(train_command(tiny_data_dir, stopped, cache, *extra, "--resume"), check=True,
                   capture_output=True, cwd=REPO)
    expected, expected_meta = checkpoint(whole)
    resumed, resumed_meta = checkpoint(stopped)
    assert resumed_meta["finished"] and resumed_meta["progress"] == expected_meta["progress"]
    assert resumed_meta["optimizer"] == expected_meta["optimizer"] == optimizer
    for name in ("input_rows", "input_values", "output_matrix", *OPTIMIZER_STATE[optimizer]):
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)


@pytest.mark.horovod
@pytest.mark.parametrize("optimizer", ["adagrad", "rowmean", "nesterov"])
def test_resumed_on_two_ranks_continues_the_one_process_run(tmp_path, tiny_data_dir, optimizer):
    """Stopped as one process x 8 documents, resumed as 2 ranks x 4: rank 0's optimizer state reaches
    rank 1, and the run ends where the unstopped one does (to float rounding: ranks sum in another order)."""
    cache = tmp_path / "cache"
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    extra = ("--optimizer", optimizer)
    subprocess.run(train_command(tiny_data_dir, whole, cache, *extra), check=True, capture_output=True, cwd=REPO)
    stop_mid_run(train_command(tiny_data_dir, stopped, cache, *extra), stopped)
    resume = train_command(tiny_data_dir, stopped, cache, *extra, "--resume")
    resume[resume.index("--batch-size") + 1] = "4"
    done = run(horovodrun_command("gloo", 2, *resume))
    assert done.returncode == 0, done.stdout + done.stderr
    assert checkpoint(stopped)[1]["finished"] and checkpoint(stopped)[1]["world_size"] == 2
    assert_same_weights(stopped, whole)
    assert_same_optimizer_state(checkpoint(stopped)[0], checkpoint(whole)[0], OPTIMIZER_STATE[optimizer])


def test_resume_refuses_changed_settings(tmp_path, tiny_data_dir):
    """Continuing with another learning rate would not be the same run: say which setting differs."""
    model_dir, cache = tmp_path / "model", tmp_path / "cache"
    command = train_command(tiny_data_dir, model_dir, cache)
    command[command.index("--epoch") + 1] = "1"
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    before = (model_dir / "checkpoint.npz").read_bytes()
    command[command.index("--lr") + 1] = "0.5"
    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode != 0
    assert "--lr 0.25 (was) vs 0.5" in done.stderr and "Traceback" not in done.stderr
    assert (model_dir / "checkpoint.npz").read_bytes() == before


@pytest.mark.parametrize("optimizer", ["rowmean", "nesterov"])
def test_the_same_seed_trains_the_same_model_and_another_seed_does_not(tmp_path, tiny_data_dir, optimizer):
    """Large-batch rules are deterministic with --seed: two fresh runs agree bit for bit."""
    cache = tmp_path / "cache"
    runs = {}
    for name, seed in (("first", "3"), ("again", "3"), ("other", "4")):
        command = train_command(tiny_data_dir, tmp_path / name, cache, "--optimizer", optimizer)
        command[command.index("--epoch") + 1], command[command.index("--seed") + 1] = "2", seed
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        runs[name] = checkpoint(tmp_path / name)[0]
    for name in ("input_values", "output_matrix", *OPTIMIZER_STATE[optimizer]):
        np.testing.assert_array_equal(runs["again"][name], runs["first"][name], err_msg=name)
    assert not np.array_equal(runs["other"]["output_matrix"], runs["first"]["output_matrix"])
