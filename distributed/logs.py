"""Messages for people, from rank 0 only: the one logging set-up of every entry point.

`log` (stderr) carries progress and notes; `results` (stdout) carries what a command
outputs (a JSON line, a report table), so a pipe receives the results alone. Under a
launcher every rank runs the same code: the filter lets rank 0 speak and the other ranks
only report errors, so no code path needs its own "am I rank 0" test before printing.
Writing files is another matter: only rank 0 writes them, and the code says so where it
writes.
"""
import logging
import sys
import threading
from typing import Optional

from .launcher import launched_rank

log = logging.getLogger("fasttext_horovod")
results = logging.getLogger("fasttext_horovod.results")

_rank = 0


class RankZeroFilter(logging.Filter):
    """Passes every record on rank 0 and only errors elsewhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        return speaks() or record.levelno >= logging.ERROR


def init_logging(rank: Optional[int] = None) -> None:
    """Plain messages to stderr (`log`) and stdout (`results`); `rank` defaults to the launcher's."""
    global _rank
    _rank = (launched_rank() or 0) if rank is None else rank
    for logger, stream in ((log, sys.stderr), (results, sys.stdout)):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(RankZeroFilter())
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    threading.excepthook = lambda failure: _report_background_failure(f"thread {failure.thread.name}",
                                                                      failure.exc_value)
    sys.unraisablehook = lambda failure: _report_background_failure("at exit", failure.exc_value)


def _report_background_failure(where: str, error: BaseException) -> None:
    """One warning line, once per message, for an exception no caller can catch: a library's
    writer thread (tensorboardX's event writer on a full disk) or an exit handler. The same
    failure also reaches the main thread, which ends the run with its own `error:` line."""
    message = f"{type(error).__name__}: {error}"
    if message not in _reported:
        _reported.add(message)
        log.warning(f"warning: {where}: {message}")


_reported = set()


def speaks() -> bool:
    """Whether this process's messages are shown: what a live progress bar, which redraws
    its line on the terminal instead of logging lines, asks before drawing."""
    return _rank == 0
