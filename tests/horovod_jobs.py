"""Real Horovod jobs in tests: launching `horovodrun -np N --gloo|--mpi ...`, comparing what they wrote."""
import subprocess
import sys
from pathlib import Path

import numpy as np

from fasttext_horovod.model.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"
CONTROLLERS = ("gloo", "mpi")


def horovodrun_command(controller: str, num_proc: int, *command, output_dir: Path = None) -> list:
    """With `output_dir`, each rank's stdout and stderr also go to `output_dir/**/rank.R/`."""
    launcher = ["--output-filename", str(output_dir)] if output_dir else []
    return [str(HOROVODRUN), "-np", str(num_proc), f"--{controller}", *launcher, *map(str, command)]


def train_command(controller: str, num_proc: int, *args, output_dir: Path = None) -> list:
    """`launch/train.py ARGS` as one process (num_proc 1, no launcher) or under horovodrun."""
    train = [sys.executable, str(REPO / "launch" / "train.py"), *map(str, args)]
    return train if num_proc == 1 else horovodrun_command(controller, num_proc, *train, output_dir=output_dir)


def run(command: list, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=timeout)


# Real AG News settings that reach the paper's accuracy, with a small hash table for speed.
TRAIN_SETTINGS = ("--epoch", "5", "--dim", "10", "--lr", "0.25", "--word-ngrams", "2", "--bucket", "100000",
                  "--log-every", "20")
WEIGHTS = ("input_rows", "input_values", "output_matrix")


def checkpoint_arrays(model_dir: Path) -> dict:
    arrays, _ = load_checkpoint(str(model_dir / "checkpoint.npz"))
    return {name: arrays[name] for name in WEIGHTS}


def assert_same_optimizer_state(got: dict, expected: dict, names):
    """The checkpoints' optimizer arrays `names` equal to the float rounding of ranks summing in another
    order (rtol 1e-4). A velocity sums signed gradients: where they cancel (terms ~1e-3, sum ~0) the
    other order leaves ~1e-7 absolute, a large relative difference, hence its absolute tolerance."""
    for name in names:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6 if name == "row_velocity" else 0,
                                   err_msg=name)


def assert_same_weights(got_dir: Path, expected_dir: Path, rtol: float = 0.0):
    """The same touched rows, and every weight equal to float tolerance (`rtol` as well, for the
    large weights of large learning rates, where summing in another order moves the last digit)."""
    got, expected = checkpoint_arrays(got_dir), checkpoint_arrays(expected_dir)
    np.testing.assert_array_equal(got["input_rows"], expected["input_rows"])
    for name in ("input_values", "output_matrix"):
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, rtol=rtol, err_msg=name)
