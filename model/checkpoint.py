"""Checkpoint files: named arrays plus JSON metadata in one `.npz`, never pickled.

A checkpoint is written to a temporary file beside its destination and renamed over it,
so a crash leaves either the previous checkpoint or the new one, never half of one.

A checkpoint is untrusted input when read: every member's declared size is checked against
the file before anything is decompressed or allocated, and every array against the model it
describes (dtypes, shapes, row ids within the input matrix), so a damaged or crafted file
is a `CheckpointError`, never an out-of-bounds write in MXNet.
"""
import contextlib
import json
import math
import os
import resource
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .losses import LOSSES

FORMAT_NAME = "fasttext-horovod-checkpoint"
# 2: untouched input rows regenerate from blocked PCG64 streams (1: from MXNet's sampler).
FORMAT_VERSION = 2
_META_KEY = "__meta__"
_MAX_MEMBERS = 64           # a checkpoint holds about ten arrays
_INT32_MAX = 2 ** 31 - 1    # fastText's bucket and counts of rows are int32
# Encoding allocates n - 1 buckets per word: a crafted n of 10^9 would ask for gigabytes per
# document. fastText's papers use n <= 5; nothing sensible comes near this.
MAX_WORD_NGRAMS = 64
_ARRAYS = {                 # name: (dtype, number of dimensions)
    "input_rows": (np.int64, 1), "input_values": (np.float32, 2), "output_matrix": (np.float32, 2),
    "dict_words": (np.uint8, 1), "dict_word_counts": (np.int64, 1), "dict_labels": (np.uint8, 1),
    "dict_label_counts": (np.int64, 1), "dict_settings": (np.int64, 1),
}
_OPTIONAL_ARRAYS = {"dict_pruneidx": (np.int64, 2)}
_PROGRESS_KEYS = ("epoch", "batch", "tokens", "step")


class CheckpointError(Exception):
    """A checkpoint that cannot be used (or written); the message names the file."""


@dataclass
class RowBlocks:
    """A 2-D array that `save_checkpoint` writes a block of rows at a time, never whole.

    A model's touched input rows are most of its matrix by the end of a large run (451 MB
    at Yelp's size): copied off the device whole, they were the trainer's peak. `blocks`
    yields the rows in order when the member is written, and must yield `shape[0]` in all.
    """

    shape: Tuple[int, int]
    dtype: np.dtype
    blocks: Callable[[], Iterable[np.ndarray]]

    def write_npy(self, out) -> None:
        """The `.npy` bytes `np.lib.format.write_array` would write for the whole array."""
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(self.dtype)),
                                                   "fortran_order": False, "shape": self.shape})
        written = 0
        for block in self.blocks():
            block = np.ascontiguousarray(block, dtype=self.dtype)
            if block.shape[1:] != self.shape[1:]:
                raise ValueError(f"a block of shape {block.shape} for an array of shape {self.shape}")
            out.write(block.data)
            written += len(block)
        if written != self.shape[0]:
            raise ValueError(f"{written} rows written for an array of shape {self.shape}")


def memory_budget() -> int:
    """Bytes a loader may allocate for one model: half the machine's memory, or half the
    address space left under `ulimit -v` where that is less. A file asking for more is
    refused up front instead of failing (or being killed) halfway through the allocation."""
    page = os.sysconf("SC_PAGE_SIZE")
    available = os.sysconf("SC_PHYS_PAGES") * page
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        with open("/proc/self/statm", encoding="ascii") as statm:
            available = min(available, soft - int(statm.read().split()[0]) * page)
    return max(available, 0) // 2


@contextlib.contextmanager
def atomic_output(path: str, mode: str = "wb", suffix: str = ""):
    """A file object whose content appears at `path` only when the block succeeds.

    The temporary file beside `path` gets the permissions of an ordinary new file (0666 less
    the umask), not mkstemp's private 0600. A failure to write (full disk, read-only
    directory) is a `CheckpointError` naming `path`, and leaves no temporary file behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(path: str, arrays: Dict[str, "np.ndarray | RowBlocks"], meta: dict) -> None:
    meta = dict(meta, format=FORMAT_NAME, format_version=FORMAT_VERSION)
    arrays = {**arrays, _META_KEY: np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    with atomic_output(path, suffix=".npz") as out:
        # np.savez's own layout (stored .npy members), but with the archive closed on a failed
        # write too: np.savez leaves it to the garbage collector, which then prints a traceback.
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                with archive.open(name + ".npy", "w", force_zip64=True) as member:
                    if isinstance(array, RowBlocks):
                        array.write_npy(member)
                    else:
                        np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def checkpoint_meta(config: dict, progress: dict, finished: bool, label_names: List[str],
                    num_classes: Optional[int], world_size: int, text_normalization: Optional[str],
                    metrics: Optional[dict] = None, validation: Optional[dict] = None, **provenance) -> dict:
    """A checkpoint's metadata, whoever writes it (training, or an import from fastText).

    `config` holds the run settings by flag name; a writer may leave out settings it has no
    value for (an imported `.bin` knows no --seed or --num-shards), and readers take the
    defaults for those. `progress` is where training stands ({} for an untrained start).
    """
    return {"config": config, "progress": progress, "finished": finished, "validation": validation or {},
            "label_names": label_names, "num_classes": num_classes, "world_size": world_size,
            "text_normalization": text_normalization, "metrics": metrics or {}, **provenance}


def load_checkpoint(path: str) -> Tuple[Dict[str, np.ndarray], dict]:
    """Arrays and metadata of a checkpoint, checked (see `check_model_arrays`); refuses files
    of another format or version."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no checkpoint here (train a model into this --model-dir first)")
    try:
        arrays = _read_arrays(path)
        meta = json.loads(arrays.pop(_META_KEY).tobytes())
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, RecursionError, SyntaxError, TypeError, zipfile.BadZipFile,
            zipfile.LargeZipFile) as err:
        raise CheckpointError(f"{path}: not a checkpoint of this project ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a checkpoint of this project")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')} "
                              f"but this version reads {FORMAT_VERSION}; retrain or use the matching release")
    check_model_arrays(path, arrays, meta)
    return arrays, meta


def _read_arrays(path: str) -> Dict[str, np.ndarray]:
    """The `.npy` members of the archive, each read only after its header's shape and dtype
    proved to match the bytes the member holds. np.savez stores members uncompressed, so a
    member larger than the file (a zip bomb) is refused before it is inflated."""
    size = os.path.getsize(path)
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        if len(members) > _MAX_MEMBERS:
            raise CheckpointError(f"{path}: {len(members)} archive members, a checkpoint has about ten")
        for info in members:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > size or not info.filename.endswith(".npy"):
                raise CheckpointError(f"{path}: archive member {info.filename!r} is not an uncompressed array "
                                      f"({info.file_size:,} bytes declared in a file of {size:,})")
            with archive.open(info) as member:
                arrays[info.filename[:-len(".npy")]] = _read_member(path, info, member)
    return arrays


def _read_member(path: str, info: zipfile.ZipInfo, member) -> np.ndarray:
    version = np.lib.format.read_magic(member)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = header(member)
    except Exception as err:  # numpy parses the header with tokenize and literal_eval: any error is a bad header
        raise CheckpointError(f"{path}: array {info.filename!r} has a damaged header ({type(err).__name__})") from None
    if dtype.hasobject or dtype.kind not in "biuf" or any(d < 0 for d in shape):
        raise CheckpointError(f"{path}: array {info.filename!r} of dtype {dtype} and shape {shape} is not allowed")
    nbytes = math.prod(shape) * dtype.itemsize
    if member.tell() + nbytes != info.file_size:
        raise CheckpointError(f"{path}: array {info.filename!r} declares shape {shape} of {dtype}, "
                              f"but its member holds {info.file_size - member.tell():,} bytes of data")
    data = np.frombuffer(member.read(nbytes), dtype=dtype)
    return data.reshape(shape, order="F" if fortran_order else "C").astype(dtype.newbyteorder("="), copy=False)


def _is_int(value, low: int = 0, high: int = 2 ** 63 - 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_model_arrays(path: str, arrays: Dict[str, np.ndarray], meta: dict) -> None:
    """Refuse arrays and metadata that do not describe one consistent model.

    What the loaders and MXNet rely on, checked before any of it is used: each array's
    dtype and rank, the dictionary's sizes, every stored row id inside the input matrix
    (MXNet's scatter does not check: an id past the end corrupts the heap), the weights'
    shapes (rows x dim) and finiteness, the settings the model is built from, and that the
    model fits in memory.
    """
    def damaged(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: damaged checkpoint: {what}")

    for name, (dtype, ndim) in {**_ARRAYS, **{k: v for k, v in _OPTIONAL_ARRAYS.items() if k in arrays}}.items():
        if name not in arrays:
            raise damaged(f"array {name!r} is missing")
        if arrays[name].dtype != dtype or arrays[name].ndim != ndim:
            raise damaged(f"array {name!r} is {arrays[name].dtype} of {arrays[name].ndim} dimensions, "
                          f"expected {np.dtype(dtype)} of {ndim}")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise damaged("no settings in its metadata")
    dim, loss = config.get("dim"), config.get("loss")
    if not _is_int(dim, 1, _INT32_MAX) or loss not in LOSSES or not _is_int(config.get("seed", 0)):
        raise damaged(f"settings dim {dim!r}, loss {loss!r}, seed {config.get('seed')!r}")
    if arrays["dict_settings"].shape != (3,):
        raise damaged("dictionary settings are not (ntokens, bucket, word n-grams)")
    ntokens, bucket, word_ngrams = (int(v) for v in arrays["dict_settings"])
    if ntokens < 0 or not 0 <= bucket <= _INT32_MAX or not 1 <= word_ngrams <= MAX_WORD_NGRAMS:
        raise damaged(f"dictionary settings ntokens {ntokens}, bucket {bucket}, word n-grams {word_ngrams}")
    words = _tokens(arrays["dict_words"])
    labels = _tokens(arrays["dict_labels"])
    if b"" in words or b"" in labels:
        raise damaged("an empty word or label in the dictionary")
    if len(words) != len(arrays["dict_word_counts"]) or len(labels) != len(arrays["dict_label_counts"]):
        raise damaged(f"{len(words)} words and {len(labels)} labels but {len(arrays['dict_word_counts'])} and "
                      f"{len(arrays['dict_label_counts'])} counts")
    if not labels:
        raise damaged("no labels")
    if (arrays["dict_word_counts"] < 0).any() or (arrays["dict_label_counts"] < 0).any():
        raise damaged("a negative word or label count")
    try:
        [label.decode("utf-8") for label in labels]
    except UnicodeDecodeError:
        raise damaged("a label is not UTF-8") from None
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != len(labels) or not all(isinstance(n, str) for n in names):
        raise damaged(f"label names do not match its {len(labels)} labels")
    progress = meta.get("progress")
    if not isinstance(progress, dict) or not all(k in _PROGRESS_KEYS and _is_int(v) for k, v in progress.items()):
        raise damaged(f"training progress {progress!r}")
    if not _is_int(meta.get("world_size"), 1) or not (meta.get("num_classes") is None
                                                       or _is_int(meta.get("num_classes"), 1)):
        raise damaged(f"world size {meta.get('world_size')!r}, classes {meta.get('num_classes')!r}")
    rows = len(words) + (bucket if word_ngrams > 1 else 0)
    if "dict_pruneidx" in arrays:
        pruneidx = arrays["dict_pruneidx"]
        rows = len(words) + len(pruneidx)
        if pruneidx.shape[1:] != (2,) or (len(pruneidx) and (
                pruneidx.min() < 0 or pruneidx[:, 0].max() >= bucket or pruneidx[:, 1].max() >= len(pruneidx)
                or len(np.unique(pruneidx[:, 0])) != len(pruneidx)
                or len(np.unique(pruneidx[:, 1])) != len(pruneidx))):
            raise damaged("pruned dictionary: a bucket or row out of range, or listed twice")
    input_rows = arrays["input_rows"]
    if len(input_rows) and (input_rows[0] < 0 or input_rows[-1] >= rows or (np.diff(input_rows) <= 0).any()):
        raise damaged(f"stored input rows are not increasing ids within 0..{rows - 1}")
    if arrays["input_values"].shape != (len(input_rows), dim):
        raise damaged(f"input values {arrays['input_values'].shape}, expected ({len(input_rows)}, {dim})")
    if arrays["output_matrix"].shape != (len(labels), dim):
        raise damaged(f"output matrix {arrays['output_matrix'].shape}, expected ({len(labels)}, {dim})")
    if not (np.isfinite(arrays["input_values"]).all() and np.isfinite(arrays["output_matrix"]).all()):
        raise damaged("weights that are not finite")
    needed = 2 * rows * dim * 4  # the float32 matrix, and its seeded initial values drawn beside it
    if needed > memory_budget():
        raise CheckpointError(f"{path}: its input matrix ({rows:,} x {dim}) needs {needed / 2 ** 30:.1f} GiB to load, "
                              f"more than this machine can give a model ({memory_budget() / 2 ** 30:.1f} GiB)")


def check_optimizer_state(path: str, arrays: Dict[str, np.ndarray], empty: Dict[str, np.ndarray],
                          num_rows: int) -> None:
    """Refuse optimizer state unlike what the resuming rule keeps for the checkpoint's `num_rows`
    input rows: MXNet's scatter of a misshapen array fails with a traceback, and non-finite
    state poisons every row it touches. `empty` is the rule's state for no rows, so nothing
    table-sized is built to compare with; its `row_*` arrays get one entry per row."""
    for name, like in empty.items():
        shape = (num_rows, *like.shape[1:]) if name.startswith("row_") else like.shape
        got = arrays.get(name)
        if got is None or got.shape != shape or got.dtype != like.dtype:
            found = "missing" if got is None else f"{got.dtype} of shape {got.shape}"
            raise CheckpointError(f"{path}: damaged checkpoint: optimizer state {name!r} is {found}, expected "
                                  f"{like.dtype} of shape {shape}")
        if got.dtype.kind == "f" and not np.isfinite(got).all():
            raise CheckpointError(f"{path}: damaged checkpoint: optimizer state {name!r} is not finite")


def _tokens(packed: np.ndarray) -> List[bytes]:
    """Tokens as `Dictionary.to_arrays` packs them: joined by newlines."""
    data = packed.tobytes()
    return data.split(b"\n") if data else []


def write_json_atomic(path: str, data: dict) -> None:
    """Write JSON via a temporary file and rename, like checkpoints."""
    with atomic_output(path, "w", suffix=".json") as out:
        json.dump(data, out, indent=1)
