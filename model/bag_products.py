"""The bag matrix's two products on the CPU, compiled, in the order MXNet's sparse `dot` adds.

A step's hidden layer is `bag . rows` (documents x U CSR times the U gathered input rows)
and its row gradients `bag^T . d_hidden`. MXNet's CPU kernels for these run ~1 ns a
multiply-add plus their fixed cost, and need the rows gathered and the CSR matrix built
first (Debian, batch 64, dim 100: ~2.5 ms of a 6.5 ms step). These loops read the batch's
numpy arrays and the input matrix in place, write into NDArrays' memory (no conversions), and add each output row's terms in MXNet's
order (`DotCsrDnsDnsByRowBlocks`, `DotCsrTransDnsRspByRowBlocks`: documents in order, a
document's entries in order), with float32 products and sums, so they give MXNet's bits
(tested against `mx.nd.sparse.dot`).
"""
import numba
import numpy as np

from .memory_hints import prefetch_ahead


@numba.njit(cache=True)
def bag_times_rows(matrix, row_ids, data, indices, indptr, out):
    """out = `bag . matrix[row_ids]`, (documents, dim) float32, for the CSR (data, indices, indptr)
    over the columns `row_ids` (sorted).

    The rows are gathered first, in id order: a document-order walk of a 400 MB matrix
    waits on memory at every entry (dim 10, bigrams, bucket 10M: 1.7 ms a batch of 64).
    """
    dim = matrix.shape[1]
    rows = np.empty((len(row_ids), dim), np.float32)
    for i in range(len(row_ids)):
        prefetch_ahead(matrix, row_ids, i)
        rows[i] = matrix[row_ids[i]]
    out[:] = 0.0
    for doc in range(len(indptr) - 1):
        for k in range(indptr[doc], indptr[doc + 1]):
            prefetch_ahead(rows, indices, k)  # the gathered rows outgrow L2 (50k rows x 10: 2 MB)
            row, weight = rows[indices[k]], data[k]
            for j in range(dim):
                out[doc, j] += row[j] * weight


@numba.njit(cache=True)
def bag_transpose_times(data, indices, indptr, grad, out):
    """out[:, :dim] = `bag^T . grad`, float32: each column's (unique row's) gradient, dim = grad's
    width. `out` may be wider (an update rule's row message, whose other columns it leaves):
    a contiguous array, so no copy joins the two (a strided view of the first columns cost
    0.5 ms more a step at 50k rows)."""
    dim = grad.shape[1]
    out[:, :dim] = 0.0
    for doc in range(len(indptr) - 1):
        for k in range(indptr[doc], indptr[doc + 1]):
            prefetch_ahead(out, indices, k)
            column, weight = indices[k], data[k]
            for j in range(dim):
                out[column, j] += grad[doc, j] * weight
