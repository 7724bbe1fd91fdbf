"""A software prefetch for compiled loops that visit rows of a large table in a known order.

A step reads and writes ~50k random rows of a 400 MB input matrix (Debian, bigrams, bucket
10M, 1,024 documents). Each row is a cache miss, and on this VM also a page walk, which the
CPU starts only when the load reaches it; asking for the row a few iterations ahead overlaps
them. Measured on 30 real batches of that step, medians: row update 4.5 -> 2.9 ms, gather
2.0 -> 1.7 ms. The bag products walk the gathered rows (2 MB, past L2) in document order, and
ask the same way: `bag . rows` 3.4 -> 2.3 ms, `bag^T . grad` 2.9 -> 2.5 ms.
"""
import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

AHEAD = 16  # rows ahead of the one in use: 8 to 64 measured the same


@intrinsic
def prefetch_row(typingctx, matrix, row):
    """Hint that `matrix[row]` (a 2-D array) will be read or written soon; changes nothing else."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        address = cgutils.get_item_pointer(context, builder, array_type, array, [args[1], zero], wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32]), "llvm.prefetch.p0i8")
        # (address, read, keep in every cache level, data)
        builder.call(function, [builder.bitcast(address, byte_pointer), int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    if not (isinstance(matrix, types.Array) and matrix.ndim == 2 and isinstance(row, types.Integer)):
        return None
    return types.void(matrix, row), codegen


@numba.njit(inline="always")
def prefetch_ahead(matrix, ids, i):
    """Prefetch the row `ids[i + AHEAD]` of `matrix`, if there is one."""
    if i + AHEAD < len(ids):
        prefetch_row(matrix, ids[i + AHEAD])
