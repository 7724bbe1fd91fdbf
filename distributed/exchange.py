"""Gradient exchange designed for a bag-of-n-grams model.

A step touches a few thousand of the input matrix's millions of rows, so ranks exchange
only those rows: every rank all-gathers the (row ids, row gradients) pairs, sums rows
that several ranks touched, and applies the same sparse update to its replica. The
output matrix is small and dense and is all-reduced. Gradients are *summed*, never
averaged: fastText's learning rate is per example (see `model.sgd`).

For a world of one the exchange is the identity, so the training loop has one path.
"""
import time
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from .world import World


@dataclass
class ExchangeStats:
    seconds: float = 0.0
    bytes_sent: int = 0          # by this rank, this step
    dense_equivalent_bytes: int = 0  # what a dense all-reduce of both matrices would send


def sum_duplicate_rows(ids: np.ndarray, rows: mx.nd.NDArray):
    """(sorted unique ids, per-id sum of `rows`), the sum taken on the rows' device."""
    unique_ids, inverse = np.unique(ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    indptr = np.zeros(len(unique_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(inverse, minlength=len(unique_ids)), out=indptr[1:])
    selector = mx.nd.sparse.csr_matrix((np.ones(len(ids), dtype=np.float32), order, indptr),
                                       shape=(len(unique_ids), len(ids)), ctx=rows.context)
    return unique_ids, mx.nd.sparse.dot(selector, rows)


class GradientExchange:
    """Sums every rank's sparse input-row gradients and dense output gradients."""

    def __init__(self, world: World, num_input_rows: int, fp16: bool = False):
        self.world = world
        self.num_input_rows = num_input_rows
        self.fp16 = fp16
        self.last = ExchangeStats()

    def _wire(self, array: mx.nd.NDArray) -> mx.nd.NDArray:
        return array.astype(np.float16) if self.fp16 else array

    def exchange(self, ids: np.ndarray, row_grads: mx.nd.NDArray, output_grad: mx.nd.NDArray, counts: np.ndarray):
        """Sum over ranks: (row ids, their summed gradients, output gradient, `counts`)."""
        if self.world.size == 1:
            self.last = ExchangeStats()
            return ids, row_grads, output_grad, counts
        hvd = self.world.hvd
        start = time.perf_counter()
        ctx = row_grads.context
        all_ids = hvd.allgather(mx.nd.array(ids, dtype=np.int64, ctx=ctx), name="row_ids")
        all_rows = hvd.allgather(self._wire(row_grads), name="row_grads").astype(np.float32)
        summed_output = hvd.allreduce(self._wire(output_grad), average=False, name="output_grad")
        merged_ids, merged_rows = sum_duplicate_rows(all_ids.asnumpy(), all_rows)
        merged_rows.wait_to_read()
        itemsize = 2 if self.fp16 else 4
        dim = row_grads.shape[1]
        self.last = ExchangeStats(
            seconds=time.perf_counter() - start,
            bytes_sent=ids.size * 8 + row_grads.size * itemsize + output_grad.size * itemsize,
            dense_equivalent_bytes=(self.num_input_rows * dim + output_grad.size) * 4)
        return merged_ids, merged_rows, summed_output.astype(np.float32)
