"""Throughput and scaling efficiency: how close N ranks come to N times one worker.

Every rank times each step and, within it, the gradient exchange ("communicate": packing,
the all-gather including any wait for a slower rank, merging); the rest of the step is
"compute" (assembling the batch, forward, backward, update). At every log point, epoch
end and run end the ranks' totals are gathered, so every rank sees the same global
numbers (and stops together on a non-finite loss) while rank 0 writes them:

    global examples/s = documents of all ranks / the slowest rank's step time
    efficiency        = global examples/s / (N x single-worker examples/s)

The single-worker rate is measured, never assumed: `--baseline-rate` (e.g. the np=1 rate
that bench/scaling.py reports), or else, under Horovod, rank 0 alone times
CALIBRATION_STEPS steps of a world of one on its own next batches before training, with
learning rate 0 so the weights do not move, while the other ranks wait. For a world of
one without --baseline-rate there is nothing to compare with and no efficiency.
"""
import time
from itertools import islice
from typing import Callable, Dict, Iterable, Optional

import numpy as np

from fasttext_horovod.data_pipeline.batching import Batch

from .exchange import ExchangeStats

CALIBRATION_WARMUP_STEPS = 10
CALIBRATION_STEPS = 100

FIELDS = ("documents", "tokens", "loss_sum", "seconds", "communicate_seconds", "steps", "received_bytes",
          "dense_allreduce_bytes")
_FIELD = {name: i for i, name in enumerate(FIELDS)}


class ScalingMeter:
    """This rank's totals (FIELDS rows) for the current log window, epoch and run.

    The window's loss stays on the device until the window closes, so metering does not
    force a device sync every step.
    """

    def __init__(self):
        self._window = np.zeros(len(FIELDS))
        self._loss_sum = None
        self._epoch = np.zeros(len(FIELDS))
        self._run = np.zeros(len(FIELDS))

    def add(self, loss, documents: int, tokens: int, seconds: float, exchange: ExchangeStats):
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._window += (documents, tokens, 0.0, seconds, exchange.seconds, 1, exchange.received_bytes,
                         exchange.dense_allreduce_bytes)

    @property
    def window_empty(self) -> bool:
        return self._loss_sum is None

    def close_window(self) -> np.ndarray:
        totals, self._window = self._window, np.zeros(len(FIELDS))
        totals[_FIELD["loss_sum"]] = self._loss_sum.asscalar()
        self._loss_sum = None
        self._epoch += totals
        self._run += totals
        return totals

    def close_epoch(self) -> np.ndarray:
        """The epoch's totals; close its last window first."""
        totals, self._epoch = self._epoch, np.zeros(len(FIELDS))
        return totals

    def close_run(self) -> np.ndarray:
        return self._run


def summarize(per_rank: np.ndarray, single_worker_rate: Optional[float]) -> Dict[str, object]:
    """Global numbers from every rank's FIELDS row (one row per rank, rank order)."""
    column = {name: per_rank[:, i] for name, i in _FIELD.items()}
    seconds = np.maximum(column["seconds"], 1e-9)
    steps = max(column["steps"].max(), 1.0)
    documents = column["documents"].sum()
    wall = seconds.max()  # ranks move in lockstep; the slowest sets the pace
    summary = {
        "examples": int(documents),
        "loss": column["loss_sum"].sum() / max(documents, 1.0),
        "examples_per_second": documents / wall,
        "tokens_per_second": column["tokens"].sum() / wall,
        "rank_examples_per_second": (column["documents"] / seconds).tolist(),
        "rank_tokens_per_second": (column["tokens"] / seconds).tolist(),
        "compute_seconds_per_step": float(np.mean(seconds - column["communicate_seconds"]) / steps),
        "communicate_seconds_per_step": float(np.mean(column["communicate_seconds"]) / steps),
        "communicate_fraction": float(column["communicate_seconds"].sum() / seconds.sum()),
        "bytes_per_step": float(np.mean(column["received_bytes"]) / steps),
        "dense_allreduce_bytes_per_step": float(np.mean(column["dense_allreduce_bytes"]) / steps),
    }
    if single_worker_rate:
        summary["single_worker_examples_per_second"] = single_worker_rate
        summary["efficiency"] = summary["examples_per_second"] / (len(per_rank) * single_worker_rate)
    return summary


# Summary keys that only mean something when ranks exchange gradients.
_COMMUNICATION_KEYS = ("communicate_seconds_per_step", "communicate_fraction", "bytes_per_step",
                       "dense_allreduce_bytes_per_step")


def scaling_scalars(summary: Dict[str, object], group: str) -> Dict[str, float]:
    """TensorBoard tags under `group`/ for a summary: rates, time split, traffic, efficiency.

    A world of one has no per-rank rates (its rate is the global one) and no exchange, so it
    gets neither, rather than curves of copies and zeros. Efficiency comes with its ideal, a
    constant 1.0 curve to read it against.
    """
    ranks = len(summary["rank_examples_per_second"])
    keys = ["examples_per_second", "tokens_per_second", "compute_seconds_per_step", "efficiency"]
    if ranks > 1:
        keys += _COMMUNICATION_KEYS
    scalars = {f"{group}/{key}": summary[key] for key in keys if key in summary}
    if "efficiency" in summary:
        scalars[f"{group}/ideal_efficiency"] = 1.0
    if ranks > 1:
        for rank, (examples, tokens) in enumerate(zip(summary["rank_examples_per_second"],
                                                      summary["rank_tokens_per_second"])):
            scalars[f"{group}/rank_{rank}/examples_per_second"] = examples
            scalars[f"{group}/rank_{rank}/tokens_per_second"] = tokens
    return scalars


def time_single_worker(step: Callable[[Batch], None], batches: Iterable[Batch]) -> Optional[float]:
    """Examples/s of `step` (a world-of-one step) over CALIBRATION_STEPS batches after a warm-up;
    fetching each batch is timed with it, as in training. None if the batches hold no documents."""
    documents, seconds = 0, 0.0
    batches = iter(islice(batches, CALIBRATION_WARMUP_STEPS + CALIBRATION_STEPS))
    for i in range(CALIBRATION_WARMUP_STEPS + CALIBRATION_STEPS):
        started = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        step(batch)
        if i >= CALIBRATION_WARMUP_STEPS:
            documents += batch.num_docs
            seconds += time.perf_counter() - started
    return documents / seconds if documents else None
