"""Progress for people: a live bar on a terminal, plain periodic lines in a log file; rank 0 only."""
import sys
import time
from typing import Optional

from .logs import log, speaks


class ProgressReporter:
    """Reports `done` of `total` units with a rate, the caller's extra fields, and an ETA.

    With `total=None` (a stream of unknown length) it reports the count and rate only.
    """

    def __init__(self, total: Optional[int], unit: str, log_every_s: float = 10.0):
        self.total = total
        self.unit = unit
        self.stream = sys.stderr
        self.interactive = speaks() and self.stream.isatty()
        self.log_every_s = log_every_s
        self.start = time.perf_counter()
        self.last_print = 0.0
        self.done = 0
        self.bytes_done = 0

    def update(self, n: int, done_before: int = 0, nbytes: int = 0, **fields):
        """Add `n` units (and `nbytes` of input, shown as MB/s); `done_before` counts units
        finished in an earlier (resumed) run."""
        self.done += n
        self.bytes_done += nbytes
        now = time.perf_counter()
        finished = self.total is not None and self.done + done_before >= self.total
        if now - self.last_print < (0.1 if self.interactive else self.log_every_s) and not finished:
            return
        self.last_print = now
        rate = self.done / max(now - self.start, 1e-9)
        extra = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        if self.bytes_done:
            extra = f"{self.bytes_done / max(now - self.start, 1e-9) / 1e6:,.1f} MB/s {extra}"
        if self.total is None:
            line = f"{self.done:,} {self.unit} {rate:,.0f}/s {extra}"
        else:
            fraction = min((self.done + done_before) / max(self.total, 1), 1.0)
            remaining = max(self.total - self.done - done_before, 0) / rate if rate > 0 else float("inf")
            line = f"{fraction:6.1%} {rate:,.0f} {self.unit}/s {extra} ETA {remaining:,.0f}s"
            if self.interactive:
                line = f"[{'#' * int(fraction * 30):<30}] " + line
        if self.interactive:
            self.stream.write(f"\r{line} ")
            self.stream.flush()
        else:
            log.info(f"progress {line}")

    def close(self):
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
