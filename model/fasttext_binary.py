"""fastText's `.bin` model file (fastText 0.9.x, file format version 12) and `.vec` text file.

Written and read field for field as fastText's `src/fasttext.cc` (`signModel`, `saveModel`,
`loadModel`), `args.cc` (`Args::save/load`), `dictionary.cc` (`Dictionary::save/load`) and
`densematrix.cc` (`DenseMatrix::save/load`) do it, little-endian:

    int32 magic 793712314, int32 version 12
    Args: int32 dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn, maxn,
          lrUpdateRate; float64 t                      (the label prefix is not stored)
    Dictionary: int32 size, nwords, nlabels; int64 ntokens, pruneidx_size (-1: not pruned);
          per entry: bytes, NUL, int64 count, int8 type (0 word, 1 label); pruneidx pairs
    bool quantised input (0), input DenseMatrix: int64 rows, int64 cols, float32 data
    bool quantised output (0), output DenseMatrix

Reading accepts what a supervised, unquantised model without character n-grams holds, and
refuses anything else with the reason, as `CheckpointError` naming the file.
"""
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from .checkpoint import CheckpointError

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
_FLAG = struct.Struct("<?")


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
    """A supervised fastText model: its dictionary (fastText's order) and both matrices."""

    args: FastTextArgs
    words: List[bytes]
    word_counts: np.ndarray
    labels: List[bytes]
    label_counts: np.ndarray
    ntokens: int
    input_matrix: np.ndarray    # (nwords + bucket, dim) float32
    output_matrix: np.ndarray   # (nlabels, dim) float32


def _encode_entries(tokens: Sequence[bytes], counts: np.ndarray, kind: int) -> bytes:
    return b"".join(token + b"\0" + _ENTRY_TAIL.pack(int(count), kind) for token, count in zip(tokens, counts))


def _matrix_bytes(matrix: np.ndarray) -> List[bytes]:
    matrix = np.ascontiguousarray(matrix, dtype="<f4")
    return [_MATRIX_HEADER.pack(*matrix.shape), memoryview(matrix).cast("B")]


def write_fasttext_bin(path: str, model: FastTextModel) -> None:
    """Write `model` as fastText's `saveModel` would, atomically (temp file, then rename)."""
    a = model.args
    expected_rows = len(model.words) + a.bucket
    if model.input_matrix.shape != (expected_rows, a.dim):
        raise ValueError(f"input matrix {model.input_matrix.shape} != (nwords + bucket, dim) "
                         f"= {(expected_rows, a.dim)}")
    if model.output_matrix.shape != (len(model.labels), a.dim):
        raise ValueError(f"output matrix {model.output_matrix.shape} != (nlabels, dim)")
    parts = [
        _HEADER.pack(MAGIC, VERSION),
        _ARGS.pack(a.dim, a.ws, a.epoch, a.min_count, a.neg, a.word_ngrams, LOSS_IDS[a.loss], a.model,
                   a.bucket, a.minn, a.maxn, a.lr_update_rate, a.t),
        _DICT_HEADER.pack(len(model.words) + len(model.labels), len(model.words), len(model.labels),
                          model.ntokens, _NOT_PRUNED),
        _encode_entries(model.words, model.word_counts, _WORD),
        _encode_entries(model.labels, model.label_counts, _LABEL),
        b"\0", *_matrix_bytes(model.input_matrix),
        b"\0", *_matrix_bytes(model.output_matrix),
    ]
    _write_atomic(path, parts)


def _write_atomic(path: str, parts) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file, not mkstemp's private 0600
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                out.write(part)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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

    def matrix(self, name: str) -> np.ndarray:
        (quantised,) = self.unpack(_FLAG)
        if quantised:
            raise self.error(f"quantized {name} matrix (a .ftz model): not supported, use the .bin")
        rows, cols = self.unpack(_MATRIX_HEADER)
        size = rows * cols * 4
        if rows < 0 or cols < 0 or self.pos + size > len(self.data):
            raise self.error(f"truncated in the {name} matrix")
        values = np.frombuffer(self.data, dtype="<f4", count=rows * cols, offset=self.pos).reshape(rows, cols)
        self.pos += size
        return values.astype(np.float32)

    def error(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {message}")


def read_fasttext_bin(path: str) -> FastTextModel:
    """A supervised fastText model from its `.bin`; anything else is a `CheckpointError`."""
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
    if losses.get(loss_id) not in ("softmax", "hs"):
        raise reader.error(f"loss {losses.get(loss_id, loss_id)} is not supported (softmax and hs are)")
    if maxn > 0:
        raise reader.error(f"uses character n-grams (minn {minn}, maxn {maxn}): not supported")
    args = FastTextArgs(dim, epoch, min_count, word_ngrams, losses[loss_id], bucket, ws, neg, model, minn, maxn,
                        lr_update_rate, t)
    size, nwords, nlabels, ntokens, pruned = reader.unpack(_DICT_HEADER)
    if pruned != _NOT_PRUNED:
        raise reader.error("pruned dictionary (a quantized model): not supported")
    if size != nwords + nlabels or min(nwords, nlabels) < 0:
        raise reader.error(f"corrupt dictionary header (size {size}, nwords {nwords}, nlabels {nlabels})")
    tokens, counts, kinds = [], np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int8)
    for i in range(size):
        tokens.append(reader.cstring())
        counts[i], kinds[i] = reader.unpack(_ENTRY_TAIL)
    if list(kinds) != [_WORD] * nwords + [_LABEL] * nlabels:
        raise reader.error("corrupt dictionary (entries are not words then labels)")
    input_matrix = reader.matrix("input")
    output_matrix = reader.matrix("output")
    if input_matrix.shape != (nwords + bucket, dim) or output_matrix.shape != (nlabels, dim):
        raise reader.error(f"matrix shapes {input_matrix.shape}, {output_matrix.shape} do not fit "
                           f"nwords {nwords} + bucket {bucket}, nlabels {nlabels}, dim {dim}")
    if reader.pos != len(reader.data):
        raise reader.error(f"{len(reader.data) - reader.pos} unexpected bytes after the output matrix")
    return FastTextModel(args, tokens[:nwords], counts[:nwords], tokens[nwords:], counts[nwords:], ntokens,
                         input_matrix, output_matrix)


def write_vec(path: str, words: Sequence[bytes], vectors: np.ndarray) -> None:
    """fastText's `.vec` text: `n dim`, then per word `word v1 ... vdim ` (5 significant digits,
    a space after every value, as fastText's `operator<<(ostream, Vector)` writes them)."""
    lines = [f"{len(words)} {vectors.shape[1]}\n".encode()]
    for word, row in zip(words, vectors.astype(np.float32)):
        lines.append(word + b" " + "".join(f"{float(v):.5g} " for v in row).encode() + b"\n")
    _write_atomic(path, lines)
