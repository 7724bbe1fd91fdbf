"""Numpy batches onto a device, and CPU arrays back into numpy, with as little overhead as MXNet allows.

`mx.nd.array` copies through a slow generic path (~0.3 ms per call); on the CPU a
zero-copy DLPack view costs a tenth of that, which matters at thousands of steps.
"""
import ctypes
import mmap

import mxnet as mx
import numpy as np
from mxnet.base import _LIB, check_call

from fasttext_horovod.data_pipeline.batching import Batch


def to_device(array: np.ndarray, ctx: mx.Context) -> mx.nd.NDArray:
    if ctx.device_type == "cpu":
        return mx.nd.from_numpy(np.ascontiguousarray(array), zero_copy=True)
    return mx.nd.array(array, ctx=ctx, dtype=array.dtype)


def huge_page_zeros(shape, dtype) -> mx.nd.NDArray:
    """A zeroed CPU NDArray on fresh anonymous memory advised for transparent huge pages.

    A step reads and writes ~16k random rows of the input matrix (Yelp, bigrams, bucket
    10M: 400 MB), and with 4 KB pages nearly every row also costs a page-table walk. On 2 MB
    pages a 16k-row gather takes 1.9 ms instead of 3.3, and the update likewise (this VM).
    The advice must precede the first touch, hence a mapping of our own rather than
    MXNet's allocator. Where the kernel has no huge pages (THP `never`) the advice is
    refused and the memory stays ordinary pages; the values are the same either way.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    mapping = mmap.mmap(-1, max(1, count * dtype.itemsize), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError):  # no MADV_HUGEPAGE on this platform, or THP disabled
        pass
    # The NDArray holds the numpy array, which holds the mapping: unmapped when the NDArray dies.
    return mx.nd.from_numpy(np.frombuffer(mapping, dtype=dtype, count=count).reshape(shape), zero_copy=True)


def empty_rows(count: int, width: int, ctx: mx.Context) -> mx.nd.NDArray:
    """An uninitialised (count, width) float32 array; zero rows too (`mx.nd.empty` rejects a
    zero-length dimension, an array from numpy does not)."""
    if not count:
        return mx.nd.array(np.zeros((0, width), dtype=np.float32), ctx=ctx)
    return mx.nd.empty((count, width), ctx=ctx)


def host_view(array: mx.nd.NDArray) -> np.ndarray:
    """A writable numpy view of a dense CPU NDArray's memory, valid while `array` lives.

    For compiled kernels that update a few rows in place: MXNet's CPU elementwise operators
    run ~2 ns an element (numpy: 0.3), and numpy's own `from_dlpack` views are read-only.
    Waits for the operations pending on `array` first (none under the NaiveEngine).
    """
    if array.context.device_type != "cpu" or array.stype != "default":
        raise ValueError(f"host_view needs a dense CPU array, got {array.stype} on {array.context}")
    check_call(_LIB.MXNDArrayWaitToWrite(array.handle))
    pointer = ctypes.c_void_p()
    check_call(_LIB.MXNDArrayGetData(array.handle, ctypes.byref(pointer)))
    dtype = np.dtype(array.dtype)
    if not array.size:
        return np.zeros(array.shape, dtype=dtype)
    buffer = (ctypes.c_char * (array.size * dtype.itemsize)).from_address(pointer.value)
    return np.frombuffer(buffer, dtype=dtype).reshape(array.shape)


def set_column(array: mx.nd.NDArray, column: int, values: np.ndarray):
    """`array[:, column] = values`: on the CPU through a numpy view (MXNet's indexed assignment
    costs 0.6 ms for 50k values, the view 0.05)."""
    if array.context.device_type == "cpu":
        host_view(array)[:, column] = values
    else:
        array[:, column] = mx.nd.array(values, ctx=array.context, dtype=array.dtype)


def rows_of(array: mx.nd.NDArray, row_ids: np.ndarray) -> np.ndarray:
    """`array[row_ids]` copied to numpy (per-row state and weights for a checkpoint); any row count."""
    if not len(row_ids):  # MXNet's take rejects zero-length indices
        return np.zeros((0, *array.shape[1:]), dtype=array.dtype)
    return mx.nd.take(array, mx.nd.array(row_ids, dtype=np.int64, ctx=array.context)).asnumpy()


def set_rows(array: mx.nd.NDArray, row_ids: np.ndarray, values: np.ndarray):
    """`array[row_ids] = values` (unique int64 ids), in `array`'s dtype; inverse of `rows_of`."""
    if not len(row_ids):
        return
    ctx = array.context
    array[mx.nd.array(row_ids, dtype=np.int64, ctx=ctx)] = mx.nd.array(values, dtype=array.dtype, ctx=ctx)


def batch_tensors(batch: Batch, ctx: mx.Context):
    """(unique row ids, CSR bag matrix, targets) of a batch as NDArrays on `ctx`.

    Targets (label ids, or ova's label sets padded with -1) are float32, the index type of
    MXNet's pick and one_hot (exact below 2^24).
    """
    bag = csr_bag(batch.bag_data, batch.bag_indices, batch.bag_indptr, len(batch.unique_ids), ctx)
    return to_device(batch.unique_ids, ctx), bag, to_device(batch.targets.astype(np.float32), ctx)


def csr_bag(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, num_columns: int,
            ctx: mx.Context) -> mx.nd.sparse.CSRNDArray:
    """A (documents x `num_columns`) bag matrix on `ctx` from its CSR arrays."""
    return mx.nd.sparse.csr_matrix((to_device(data, ctx), to_device(indices, ctx), to_device(indptr, ctx)),
                                   shape=(len(indptr) - 1, num_columns), ctx=ctx)
