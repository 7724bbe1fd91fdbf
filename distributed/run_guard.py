"""What a training run checks and claims before any work: its output paths, and its model dir.

A run that would fail at its first save after an hour of training fails here instead, with
the path and the reason. The model dir is locked for the run (`flock` on `<model dir>/.lock`):
a second run into the same directory refuses to start instead of silently overwriting the
first one's model. The kernel releases the lock when its process dies, however it dies, so
a lock file left by a killed run is stale by definition and the next run takes it over.
"""
import contextlib
import fcntl
import glob
import os
import socket
import tempfile
from typing import Optional

from fasttext_horovod.data_pipeline.errors import InputError

from .launcher import launched_rank

LOCK_FILE = ".lock"


def check_output_dir(flag: str, path: str) -> None:
    """`path` is, or can be made, a directory we can write into; creates it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(path, f"{flag} is a file, expected a directory")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(path, f"{flag} cannot be created: {parent} is a file")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise InputError(path, f"{flag} is not writable ({err.strerror})") from None


def check_output_file(flag: str, path: str) -> None:
    """`path` names a file we can create (its directory writable), not a directory."""
    if os.path.isdir(path):
        raise InputError(path, f"{flag} is a directory, expected a file name")
    check_output_dir(f"the directory of {flag}", os.path.dirname(os.path.abspath(path)))


def check_output_paths(model_dir: str, cache_dir: str, logdir: Optional[str], metrics_out: Optional[str]) -> None:
    check_output_dir("--model-dir", model_dir)
    check_output_dir("--cache-dir", cache_dir)
    if logdir:
        check_output_dir("--logdir", logdir)
    if metrics_out:
        check_output_file("--metrics-out", metrics_out)


class ModelDirLock:
    """Holds `<model_dir>/.lock` until `release` (see the module docstring)."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, LOCK_FILE)
        while True:
            self.handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.handle.seek(0)
                holder = self.handle.read().strip() or "another process"
                self.handle.close()
                raise InputError(model_dir, f"another run ({holder}) is using this --model-dir; wait for it to "
                                            "finish or give another directory") from None
            if _same_file(self.path, self.handle):
                break
            self.handle.close()  # a finishing run removed the file we locked: lock the new one
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.handle.flush()
        _remove_temp_files(model_dir)

    def release(self) -> None:
        """Remove the lock file, then unlock: a run that locked it meanwhile sees it gone and retries."""
        os.unlink(self.path)
        self.handle.close()


def _same_file(path: str, handle) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _remove_temp_files(model_dir: str) -> None:
    """Temporary files of saves a killed run never finished (we hold the lock: nobody else writes here)."""
    for path in glob.glob(os.path.join(model_dir, ".tmp-*")):
        os.unlink(path)


@contextlib.contextmanager
def claimed_outputs(model_dir: str, cache_dir: str, logdir: Optional[str], metrics_out: Optional[str]):
    """On rank 0 (the rank that writes): the output paths checked, and the model dir locked
    for the block; other ranks write nothing and claim nothing."""
    if launched_rank() not in (None, 0):
        yield
        return
    check_output_paths(model_dir, cache_dir, logdir, metrics_out)
    lock = ModelDirLock(model_dir)
    try:
        yield
    finally:
        lock.release()
