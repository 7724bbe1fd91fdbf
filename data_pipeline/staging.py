"""Directories built aside and published whole, safely among concurrent and killed runs.

A corpus is built in `<cache>/.building-<random suffix>` and renamed to its final name. Builders hold
a shared lock on `<cache>/.lock` while they build; a run that takes that lock exclusively
knows no build is in progress, so every `.building-*` directory it sees was left by a killed
run and is removed. Two runs that build the same corpus both succeed: the rename of the
second finds the first one's complete directory in place and discards its own copy.
"""
import contextlib
import fcntl
import glob
import os
import shutil
import tempfile

from .errors import InputError

BUILDING_PREFIX = ".building-"
_LOCK_FILE = ".lock"


def _lock_file(cache_dir: str):
    os.makedirs(cache_dir, exist_ok=True)
    return open(os.path.join(cache_dir, _LOCK_FILE), "a")


def remove_abandoned_builds(cache_dir: str) -> None:
    """Remove the half-built directories of killed runs, if no build is running now."""
    if not os.path.isdir(cache_dir) or not glob.glob(os.path.join(cache_dir, BUILDING_PREFIX + "*")):
        return
    with _lock_file(cache_dir) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a build is running: its directory is not abandoned; a later start cleans up
        for path in glob.glob(os.path.join(cache_dir, BUILDING_PREFIX + "*")):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def building_dir(cache_dir: str, final: str, is_complete):
    """A fresh staging directory under `cache_dir`, renamed to `final` when the block succeeds
    (kept as is if another run published a complete `final` first: `is_complete(final)`),
    removed when it fails. Its permissions follow the umask, not mkdtemp's private 0700."""
    with _lock_file(cache_dir) as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        staging = tempfile.mkdtemp(prefix=BUILDING_PREFIX, dir=cache_dir)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)
            yield staging
            try:
                os.replace(staging, final)
            except OSError:  # the name is taken: by a complete corpus from another run, or by debris
                if not is_complete(final):
                    raise InputError(final, "exists but is not a complete corpus; delete it and run again") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
