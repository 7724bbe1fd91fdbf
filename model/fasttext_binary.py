"""fastText's model files (fastText 0.9.x, file format version 12): `.bin`, the quantized
`.ftz`, and the `.vec` text file.

Written and read field for field as fastText's `src/fasttext.cc` (`signModel`, `saveModel`,
`loadModel`), `args.cc` (`Args::save/load`), `dictionary.cc` (`Dictionary::save/load`),
`densematrix.cc` (`DenseMatrix::save/load`), `quantmatrix.cc` (`QuantMatrix::save/load`)
and `productquantizer.cc` (`ProductQuantizer::save/load`) do it, little-endian:

    int32 magic 793712314, int32 version 12
    Args: int32 dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn, maxn,
          lrUpdateRate; float64 t                      (the label prefix is not stored)
    Dictionary: int32 size, nwords, nlabels; int64 ntokens, pruneidx_size (-1: not pruned);
          per entry: bytes, NUL, int64 count, int8 type (0 word, 1 label);
          pruneidx_size pairs int32 bucket, int32 j (the bucket's input row is nwords + j)
    bool quantised input, input matrix; bool quantised output (qout), output matrix
    DenseMatrix: int64 rows, int64 cols, float32 data
    QuantMatrix: bool qnorm, int64 rows, int64 cols, int32 codesize, uint8 codes[codesize],
          ProductQuantizer; with qnorm also uint8 norm_codes[rows], ProductQuantizer
    ProductQuantizer: int32 dim, nsubq, dsub, lastdsub, float32 centroids[dim * 256]

A `.bin` has dense matrices and an unpruned dictionary; a `.ftz` a quantized input matrix,
usually a pruned dictionary (`pruneidx`), and a dense or quantized output matrix.

Reading accepts what a supervised model without character n-grams holds, and refuses
anything else with the reason, as `CheckpointError` naming the file.
"""
import mmap
import os
import re
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np

from .checkpoint import MAX_WORD_NGRAMS, CheckpointError, atomic_output, memory_budget
from .product_quantizer import KSUB, ProductQuantizer, QuantizedMatrix

MAGIC = 793712314
VERSION = 12
MODEL_SUPERVISED = 3                      # enum class model_name : int { cbow = 1, sg, sup }
LOSS_IDS = {"hs": 1, "ns": 2, "softmax": 3, "ova": 4}  # enum class loss_name : int
_WORD, _LABEL = 0, 1                      # enum class entry_type : int8_t
_NOT_PRUNED = -1
_HEADER = struct.Struct("<ii")
_ARGS = struct.Struct("<12id")
_DICT_HEADER = struct.Struct("<iiiqq")
_ENTRY_TAIL = struct.Struct("<qb")
_MATRIX_HEADER = struct.Struct("<qq")
_QUANT_HEADER = struct.Struct("<?qqi")
_PQ_HEADER = struct.Struct("<iiii")
_PRUNE_PAIR = np.dtype("<i4")
_FLAG = struct.Struct("<?")
_MIN_ENTRY_BYTES = 1 + _ENTRY_TAIL.size   # a one-byte token, its NUL, count and type
# A quantized matrix expands to 4 * dsub bytes of floats per code byte: 8x with fastText's
# default dsub 2. Beyond this factor a small file would demand gigabytes when dequantized.
_MAX_EXPANSION = 64
_WHITESPACE = re.compile(rb"[\s\0]")

Matrix = Union[np.ndarray, QuantizedMatrix]


@dataclass
class FastTextArgs:
    """The training arguments fastText stores; defaults are `fasttext supervised`'s."""

    dim: int
    epoch: int = 5
    min_count: int = 1
    word_ngrams: int = 1
    loss: str = "softmax"
    bucket: int = 2_000_000
    ws: int = 5
    neg: int = 5
    model: int = MODEL_SUPERVISED
    minn: int = 0
    maxn: int = 0
    lr_update_rate: int = 100
    t: float = 1e-4


@dataclass
class FastTextModel:
    """A supervised fastText model: its dictionary (fastText's order) and both matrices.

    A matrix is dense float32 or quantized. `pruneidx` is a pruned dictionary's
    (bucket, row) pairs, in file order (None: not pruned); the input matrix then has
    nwords + len(pruneidx) rows instead of nwords + bucket.
    """

    args: FastTextArgs
    words: List[bytes]
    word_counts: np.ndarray
    labels: List[bytes]
    label_counts: np.ndarray
    ntokens: int
    input_matrix: Matrix        # (nwords + bucket, dim), or (nwords + len(pruneidx), dim)
    output_matrix: Matrix       # (nlabels, dim)
    pruneidx: Optional[np.ndarray] = None  # (n, 2) int64

    @property
    def input_rows(self) -> int:
        """Rows the input matrix must have for this dictionary."""
        return len(self.words) + (self.args.bucket if self.pruneidx is None else len(self.pruneidx))


def _encode_entries(tokens: Sequence[bytes], counts: np.ndarray, kind: int) -> bytes:
    return b"".join(token + b"\0" + _ENTRY_TAIL.pack(int(count), kind) for token, count in zip(tokens, counts))


def _float_bytes(values: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(values, dtype="<f4")).cast("B")


def _quantizer_bytes(pq: ProductQuantizer) -> List[bytes]:
    return [_PQ_HEADER.pack(pq.dim, pq.nsubq, pq.dsub, pq.lastdsub), _float_bytes(pq.centroids)]


def _matrix_bytes(matrix: Matrix) -> List[bytes]:
    """The quantised flag, then the matrix as `DenseMatrix::save` or `QuantMatrix::save`."""
    if not isinstance(matrix, QuantizedMatrix):
        return [_FLAG.pack(False), _MATRIX_HEADER.pack(*matrix.shape), _float_bytes(matrix)]
    rows, cols = matrix.shape
    parts = [_FLAG.pack(True), _QUANT_HEADER.pack(matrix.qnorm, rows, cols, matrix.codes.size),
             matrix.codes.astype(np.uint8).tobytes(), *_quantizer_bytes(matrix.pq)]
    if matrix.qnorm:
        parts += [matrix.norm_codes.astype(np.uint8).tobytes(), *_quantizer_bytes(matrix.norm_pq)]
    return parts


def _model_parts(model: FastTextModel) -> List[bytes]:
    """The file's bytes in order, as `saveModel` writes them; checks what fastText relies on."""
    a = model.args
    if model.input_matrix.shape != (model.input_rows, a.dim):
        raise ValueError(f"input matrix {model.input_matrix.shape} != (nwords + "
                         f"{'bucket' if model.pruneidx is None else 'pruned buckets'}, dim) "
                         f"= {(model.input_rows, a.dim)}")
    if model.output_matrix.shape != (len(model.labels), a.dim):
        raise ValueError(f"output matrix {model.output_matrix.shape} != (nlabels, dim)")
    if model.pruneidx is not None and not isinstance(model.input_matrix, QuantizedMatrix):
        raise ValueError("fastText loads a pruned dictionary only with a quantized input matrix")
    if isinstance(model.output_matrix, QuantizedMatrix) and not isinstance(model.input_matrix, QuantizedMatrix):
        raise ValueError("fastText loads a quantized output matrix only with a quantized input matrix")
    for matrix in (model.input_matrix, model.output_matrix):
        if isinstance(matrix, QuantizedMatrix) and matrix.codes.size >= 2 ** 31:
            raise ValueError(f"{matrix.codes.size} codes do not fit fastText's int32 code count")
    pruned = _NOT_PRUNED if model.pruneidx is None else len(model.pruneidx)
    return [
        _HEADER.pack(MAGIC, VERSION),
        _ARGS.pack(a.dim, a.ws, a.epoch, a.min_count, a.neg, a.word_ngrams, LOSS_IDS[a.loss], a.model,
                   a.bucket, a.minn, a.maxn, a.lr_update_rate, a.t),
        _DICT_HEADER.pack(len(model.words) + len(model.labels), len(model.words), len(model.labels),
                          model.ntokens, pruned),
        _encode_entries(model.words, model.word_counts, _WORD),
        _encode_entries(model.labels, model.label_counts, _LABEL),
        b"" if model.pruneidx is None else np.asarray(model.pruneidx, dtype=_PRUNE_PAIR).tobytes(),
        *_matrix_bytes(model.input_matrix),
        *_matrix_bytes(model.output_matrix),
    ]


def write_fasttext_bin(path: str, model: FastTextModel) -> None:
    """Write `model` as fastText's `saveModel` would (a `.bin`, or a `.ftz` when its input
    matrix is quantized), atomically (temp file, then rename)."""
    _write_atomic(path, _model_parts(model))


def fasttext_file_size(model: FastTextModel) -> int:
    """Bytes `write_fasttext_bin` would write for `model`, without writing them."""
    return sum(len(part) for part in _model_parts(model))


def _write_atomic(path: str, parts) -> None:
    with atomic_output(path) as out:
        for part in parts:
            out.write(part)


class _Reader:
    """Sequential little-endian reads over a memory-mapped file; running short is `truncated`."""

    def __init__(self, path: str, data):
        self.path, self.data, self.pos = path, data, 0

    def unpack(self, layout: struct.Struct):
        if self.pos + layout.size > len(self.data):
            raise self.error("truncated")
        values = layout.unpack_from(self.data, self.pos)
        self.pos += layout.size
        return values

    def cstring(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.error("truncated in the dictionary")
        token = self.data[self.pos:end]
        self.pos = end + 1
        return token

    def array(self, dtype, count: int, what: str) -> np.ndarray:
        """`count` little-endian values of `dtype`, copied out of the file."""
        dtype = np.dtype(dtype)
        if count < 0 or self.pos + count * dtype.itemsize > len(self.data):
            raise self.error(f"truncated in the {what}")
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * dtype.itemsize
        return values.astype(dtype.newbyteorder("="))

    def matrix(self, name: str) -> Matrix:
        (quantised,) = self.unpack(_FLAG)
        if quantised:
            return self.quantized_matrix(name)
        rows, cols = self.unpack(_MATRIX_HEADER)
        if rows < 0 or cols < 0:
            raise self.error(f"corrupt {name} matrix header (rows {rows}, cols {cols})")
        return self.array("<f4", rows * cols, f"{name} matrix").reshape(rows, cols)

    def quantized_matrix(self, name: str) -> QuantizedMatrix:
        what = f"quantized {name} matrix"
        qnorm, rows, cols, codesize = self.unpack(_QUANT_HEADER)
        if rows < 0 or cols <= 0 or codesize < 0:
            raise self.error(f"corrupt {what} (rows {rows}, cols {cols}, {codesize} codes)")
        codes = self.array(np.uint8, codesize, what)
        pq = self.quantizer(what)
        if pq.dim != cols or codesize != rows * pq.nsubq:
            raise self.error(f"corrupt {what} (rows {rows}, cols {cols}, {codesize} codes, quantizer of "
                             f"dim {pq.dim} in groups of {pq.dsub})")
        dense_bytes = rows * cols * 4
        if dense_bytes > min(_MAX_EXPANSION * len(self.data), memory_budget()):
            raise self.error(f"{what} of {rows:,} x {cols} would take {dense_bytes / 2 ** 20:,.0f} MiB dequantized, "
                             f"more than {_MAX_EXPANSION}x the file or this machine's memory allows "
                             f"(groups of {pq.dsub} columns; fastText's default is 2)")
        matrix = QuantizedMatrix(codes.reshape(rows, pq.nsubq), pq)
        if qnorm:
            matrix.norm_codes = self.array(np.uint8, rows, f"norms of the {what}")
            matrix.norm_pq = self.quantizer(f"norms of the {what}")
            if matrix.norm_pq.dim != 1:
                raise self.error(f"corrupt {what} (norm quantizer of dim {matrix.norm_pq.dim})")
        return matrix

    def quantizer(self, what: str) -> ProductQuantizer:
        dim, nsubq, dsub, lastdsub = self.unpack(_PQ_HEADER)
        pq = ProductQuantizer(dim, max(dsub, 1), np.zeros(0, dtype=np.float32))
        if dim <= 0 or dsub <= 0 or (nsubq, lastdsub) != (pq.nsubq, pq.lastdsub):
            raise self.error(f"corrupt {what} (quantizer dim {dim}, nsubq {nsubq}, dsub {dsub}, "
                             f"lastdsub {lastdsub})")
        pq.centroids = self.array("<f4", dim * KSUB, what)
        return pq

    def error(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {message}")


def read_fasttext_bin(path: str) -> FastTextModel:
    """A supervised fastText model from its `.bin` or `.ftz`; anything else is a `CheckpointError`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(_Reader(path, data))
    except ValueError as err:  # mmap of an empty file
        raise CheckpointError(f"{path}: not a fastText model ({err})") from None
    except PermissionError:
        raise CheckpointError(f"{path}: file is not readable") from None


def _parse(reader: _Reader) -> FastTextModel:
    if len(reader.data) < _HEADER.size:
        raise reader.error("not a fastText model (too short)")
    magic, version = reader.unpack(_HEADER)
    if magic != MAGIC:
        raise reader.error(f"not a fastText model (magic number {magic}, expected {MAGIC})")
    if version != VERSION:
        raise reader.error(f"fastText file format version {version}; this reads version {VERSION} (fastText 0.9.x)")
    (dim, ws, epoch, min_count, neg, word_ngrams, loss_id, model, bucket, minn, maxn, lr_update_rate,
     t) = reader.unpack(_ARGS)
    losses = {v: k for k, v in LOSS_IDS.items()}
    if model != MODEL_SUPERVISED:
        raise reader.error(f"not a classifier (fastText model type {model}; supervised is {MODEL_SUPERVISED})")
    if losses.get(loss_id) not in ("softmax", "hs", "ova"):
        raise reader.error(f"loss {losses.get(loss_id, loss_id)} is not supported (softmax, hs and ova are)")
    if maxn > 0:
        raise reader.error(f"uses character n-grams (minn {minn}, maxn {maxn}): not supported")
    if dim < 1 or bucket < 0 or not 1 <= word_ngrams <= MAX_WORD_NGRAMS:
        raise reader.error(f"corrupt or unsupported arguments (dim {dim}, bucket {bucket}, wordNgrams {word_ngrams}; "
                           f"at most {MAX_WORD_NGRAMS})")
    args = FastTextArgs(dim, epoch, min_count, word_ngrams, losses[loss_id], bucket, ws, neg, model, minn, maxn,
                        lr_update_rate, t)
    size, nwords, nlabels, ntokens, pruned = reader.unpack(_DICT_HEADER)
    if size != nwords + nlabels or min(nwords, nlabels) < 0 or pruned < _NOT_PRUNED or ntokens < 0:
        raise reader.error(f"corrupt dictionary header (size {size}, nwords {nwords}, nlabels {nlabels}, "
                           f"ntokens {ntokens}, pruneidx_size {pruned})")
    if nlabels == 0:
        raise reader.error("the dictionary has no labels: not a classifier")
    if size * _MIN_ENTRY_BYTES > len(reader.data) - reader.pos:
        raise reader.error(f"truncated: a dictionary of {size:,} entries cannot fit in the "
                           f"{len(reader.data) - reader.pos:,} bytes left")
    tokens, counts, kinds = [], np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int8)
    for i in range(size):
        tokens.append(reader.cstring())
        counts[i], kinds[i] = reader.unpack(_ENTRY_TAIL)
    if list(kinds) != [_WORD] * nwords + [_LABEL] * nlabels:
        raise reader.error("corrupt dictionary (entries are not words then labels)")
    if (counts < 0).any() or any(not token or _WHITESPACE.search(token) for token in tokens):
        raise reader.error("corrupt dictionary (an empty token, a token with whitespace, or a negative count)")
    pruneidx = None
    if pruned != _NOT_PRUNED:
        pruneidx = reader.array(_PRUNE_PAIR, 2 * pruned, "pruned dictionary").reshape(pruned, 2).astype(np.int64)
    model = FastTextModel(args, tokens[:nwords], counts[:nwords], tokens[nwords:], counts[nwords:], ntokens,
                          reader.matrix("input"), reader.matrix("output"), pruneidx)
    input_shape, output_shape = model.input_matrix.shape, model.output_matrix.shape
    if input_shape != (model.input_rows, dim) or output_shape != (nlabels, dim):
        rows = f"bucket {bucket}" if pruneidx is None else f"{pruned} pruned buckets"
        raise reader.error(f"matrix shapes {input_shape}, {output_shape} do not fit "
                           f"nwords {nwords} + {rows}, nlabels {nlabels}, dim {dim}")
    if pruneidx is not None and not isinstance(model.input_matrix, QuantizedMatrix):
        raise reader.error("pruned dictionary with an unquantized input matrix (fastText refuses it too)")
    if pruneidx is not None and len(pruneidx) and (
            pruneidx.min() < 0 or pruneidx[:, 0].max() >= bucket or pruneidx[:, 1].max() >= pruned
            or len(np.unique(pruneidx[:, 0])) != pruned or len(np.unique(pruneidx[:, 1])) != pruned):
        raise reader.error("corrupt pruned dictionary (a bucket or row out of range, or listed twice)")
    if reader.pos != len(reader.data):
        raise reader.error(f"{len(reader.data) - reader.pos} unexpected bytes after the output matrix")
    return model


def write_vec(path: str, words: Sequence[bytes], vectors: np.ndarray) -> None:
    """fastText's `.vec` text: `n dim`, then per word `word v1 ... vdim ` (5 significant digits,
    a space after every value, as fastText's `operator<<(ostream, Vector)` writes them)."""
    lines = [f"{len(words)} {vectors.shape[1]}\n".encode()]
    for word, row in zip(words, vectors.astype(np.float32)):
        lines.append(word + b" " + "".join(f"{float(v):.5g} " for v in row).encode() + b"\n")
    _write_atomic(path, lines)
