"""Gradient exchange designed for a bag-of-n-grams model.

A step touches a few thousand of the input matrix's millions of rows, so ranks exchange
only those rows. Each rank packs one message: its step counts, the ids of the input rows
its documents used, those rows' gradients, and its gradient of the small dense output
matrix. One all-gather delivers every rank's message to every rank, and each rank sums
the rows that several ranks touched and the output gradients in rank order, so every
replica applies the same update, bit for bit. A rank whose share of a step is empty
sends a message with zero rows.

Why one all-gather instead of all-gathers of ids and rows plus an all-reduce of the
output matrix: a Horovod collective costs a negotiation round of about a millisecond or
more on the CPU, which outweighs the bytes here. (Where the job runs on MPI the message
itself goes through MPI directly, after a Horovod all-gather of its length: see
`World.allgather_bytes`.) The output matrix is labels x dim (a few
thousand floats for the paper's datasets), so gathering N copies of it costs less than a
collective of its own; all-reducing it would pay off only with a large label set.

Gradients are *summed*, never averaged (see model/optimizers.py). For a world of one the exchange is the identity,
so the training loop has one path.

The exchange runs on a thread of its own while the step loop assembles the next batch
(`GradientExchange.start`): the next batch does not depend on this step's update, and
most of an exchange is waiting, for the slower rank and for MPI, with the GIL released.
At 2,048 documents per rank on 2 cores that wait was 30-60 ms of a 140 ms step, and
assembling a batch without the prefetching process takes ~30 ms (40-50 ms before batches
were radix-sorted: the less assembly there is, the less of the exchange it hides).
"""
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Tuple

import mxnet as mx
import numba
import numpy as np

from fasttext_horovod.model.tensors import to_device

from .world import World

_ID_DTYPE = np.int32  # shards store input rows as int32, so every id fits


@dataclass
class ExchangeStats:
    """One step's exchange, seen from this rank; bytes are what this rank receives."""

    seconds: float = 0.0  # what the step spent on it: packing, and waiting for what the overlap did not hide
    received_bytes: int = 0
    dense_allreduce_bytes: int = 0  # a ring all-reduce of both full gradient matrices, same dtype


def sum_rows_by_id(blocks: List[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """(sorted union of the blocks' row ids, per id the sum of its rows in block order).

    Each block is (sorted unique ids, rows): one rank's message, read in place. The blocks'
    ids are already sorted, so one compiled merge pass per block after the first adds them
    (0 + block 0 + block 1 + ..., in block order, so every rank gets the same bits) without
    concatenating, sorting or converting float32 rows first: 2 ranks x 80k rows of 11
    floats in ~1.5 ms instead of ~10 for the copies, stable sort and scattered adds before.
    """
    wide = [(block_ids, np.asarray(block_rows, np.float32)) for block_ids, block_rows in blocks]
    if len(wide) == 1:
        wide.append((wide[0][0][:0], wide[0][1][:0]))
    ids, rows = _merge_sorted_sums(*wide[0], *wide[1])
    for block_ids, block_rows in wide[2:]:  # more than two ranks: fold in rank order
        ids, rows = _merge_sorted_sums(ids, rows, block_ids, block_rows)
    return ids, rows


@numba.njit(cache=True, nogil=True)
def _merge_sorted_sums(ids_a, rows_a, ids_b, rows_b):
    """Merge two blocks of sorted unique ids: one row per id, float32 `0 + row_a + row_b`
    (the `0 +` makes a -0.0 the +0.0 a sum from zeros gives, so folding is bit-exact)."""
    num_a, num_b, width = len(ids_a), len(ids_b), rows_a.shape[1]
    ids = np.empty(num_a + num_b, np.int64)
    rows = np.empty((num_a + num_b, width), np.float32)
    zero = np.float32(0.0)
    a = b = n = 0
    while a < num_a or b < num_b:
        if b == num_b or (a < num_a and ids_a[a] < ids_b[b]):
            ids[n] = ids_a[a]
            for column in range(width):
                rows[n, column] = zero + rows_a[a, column]
            a += 1
        elif a == num_a or ids_b[b] < ids_a[a]:
            ids[n] = ids_b[b]
            for column in range(width):
                rows[n, column] = zero + rows_b[b, column]
            b += 1
        else:
            ids[n] = ids_a[a]
            for column in range(width):
                rows[n, column] = zero + rows_a[a, column] + rows_b[b, column]
            a += 1
            b += 1
        n += 1
    return ids[:n], rows[:n]


@dataclass
class RankMessage:
    """One rank's part of a step."""

    counts: np.ndarray   # (C,) int64, summed over ranks
    ids: np.ndarray      # (U,) input rows
    rows: np.ndarray     # (U, dim) their gradients
    output: np.ndarray   # output-matrix gradient


class MessageCodec:
    """Packs a `RankMessage` into bytes: [U, counts] int64, ids int32, rows, output (wire dtype).

    Each message says its own row count, so the concatenation an all-gather returns splits
    back into messages without another collective for the lengths.
    """

    def __init__(self, num_counts: int, dim: int, output_shape: Tuple[int, ...], wire_dtype):
        self.num_counts = num_counts
        self.dim = dim
        self.output_shape = output_shape
        self.wire = np.dtype(wire_dtype)

    def encode(self, message: RankMessage) -> np.ndarray:
        """One uint8 buffer, each part converted straight into its place (no concatenation)."""
        num_rows = len(message.ids)
        buffer = np.empty(self._size(num_rows), np.uint8)
        header, ids, rows, output = self._parts(buffer, 0, num_rows)
        header[0] = num_rows
        header[1:] = message.counts
        ids[:] = message.ids
        rows[:] = message.rows
        output[:] = message.output
        return buffer

    def decode_all(self, buffer: np.ndarray) -> List[RankMessage]:
        """The messages in `buffer`, in order, as views into it (nothing copied)."""
        messages, offset = [], 0
        while offset < len(buffer):
            num_rows = int(buffer[offset:offset + 8].view(np.int64)[0])
            header, ids, rows, output = self._parts(buffer, offset, num_rows)
            messages.append(RankMessage(header[1:], ids, rows, output))
            offset += self._size(num_rows)
        return messages

    def _size(self, num_rows: int) -> int:
        return (8 * (1 + self.num_counts) + np.dtype(_ID_DTYPE).itemsize * num_rows
                + self.wire.itemsize * (num_rows * self.dim + int(np.prod(self.output_shape))))

    def _parts(self, buffer: np.ndarray, offset: int, num_rows: int):
        """(header, ids, rows, output): views of the message of `num_rows` rows at `offset`."""
        parts = []
        for dtype, shape in ((np.int64, (1 + self.num_counts,)), (_ID_DTYPE, (num_rows,)),
                             (self.wire, (num_rows, self.dim)), (self.wire, self.output_shape)):
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            parts.append(buffer[offset:offset + size].view(dtype).reshape(shape))
            offset += size
        return parts


class PendingExchange:
    """An exchange running on a daemon thread; `result()` waits for it and raises what it raised.

    A daemon thread, not an executor's: a rank leaving on an error must not wait at exit
    for a collective its peers will never join.
    """

    def __init__(self, work: Callable[[], tuple]):
        self._value, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(work,), name="gradient-exchange", daemon=True)
        self._thread.start()

    def _run(self, work):
        try:
            self._value = work()
        except BaseException as err:  # handed to the step loop's thread by result()
            self._error = err

    def result(self) -> tuple:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class GradientExchange:
    """Sums every rank's sparse input-row gradients, dense output gradients and step counts."""

    def __init__(self, world: World, input_matrix_shape: Tuple[int, int], fp16: bool = False):
        self.world = world
        self.input_matrix_size = int(np.prod(input_matrix_shape))  # what a dense all-reduce would move
        self.wire_dtype = np.float16 if fp16 else np.float32
        self.last = ExchangeStats()

    def start(self, ids: np.ndarray, row_grads: mx.nd.NDArray, output_grad: mx.nd.NDArray,
              counts: np.ndarray) -> Callable[[], tuple]:
        """Begin summing over ranks; returns `finish`, which waits for the sums: (sorted unique
        row ids, their gradients, output gradient, `counts`).

        `ids` are this rank's sorted unique rows and `row_grads` their (U, dim) gradients;
        `counts` (int64, e.g. [documents, tokens]) come back as global totals. Gradients
        return on `row_grads`' device. Until `finish` the caller may do anything but use
        MXNet or another collective: the exchange's thread runs Horovod's.
        """
        if self.world.size == 1:
            return lambda: (ids, row_grads, output_grad, counts)
        row_grads.wait_to_read()  # so a device still computing is not billed as communication
        output_grad.wait_to_read()
        started = time.perf_counter()
        codec = MessageCodec(len(counts), row_grads.shape[1], output_grad.shape, self.wire_dtype)
        message = codec.encode(RankMessage(np.asarray(counts), ids, row_grads.asnumpy(), output_grad.asnumpy()))
        pending = PendingExchange(lambda: self._gather_and_sum(codec, message))
        packing_seconds = time.perf_counter() - started
        return lambda: self._finish(pending, row_grads.context, packing_seconds)

    def exchange(self, ids: np.ndarray, row_grads: mx.nd.NDArray, output_grad: mx.nd.NDArray, counts: np.ndarray):
        """`start` and its `finish` with nothing between."""
        return self.start(ids, row_grads, output_grad, counts)()

    def _finish(self, pending: PendingExchange, ctx: mx.Context, packing_seconds: float) -> tuple:
        waited_from = time.perf_counter()
        merged_ids, merged_rows, summed_output, summed_counts, received_bytes = pending.result()
        summed = merged_ids, to_device(merged_rows, ctx), to_device(summed_output, ctx), summed_counts
        size, wire_bytes = self.world.size, np.dtype(self.wire_dtype).itemsize
        self.last = ExchangeStats(
            seconds=packing_seconds + time.perf_counter() - waited_from,
            received_bytes=received_bytes,
            dense_allreduce_bytes=int(2 * (size - 1) / size * (self.input_matrix_size + summed_output.size)
                                      * wire_bytes))
        return summed

    def _gather_and_sum(self, codec: MessageCodec, message: np.ndarray):
        """On the exchange's thread: every rank's message, summed (numpy, on the CPU)."""
        gathered = self.world.allgather_bytes(message, name="gradients")
        messages = codec.decode_all(gathered)
        merged_ids, merged_rows = sum_rows_by_id([(m.ids, m.rows) for m in messages])
        summed_output = np.sum([m.output.astype(np.float32) for m in messages], axis=0)
        summed_counts = np.sum([m.counts for m in messages], axis=0)
        return merged_ids, merged_rows, summed_output, summed_counts, len(gathered) - len(message)
