"""Checkpoint files: named arrays plus JSON metadata in one `.npz`, never pickled.

A checkpoint is written to a temporary file beside its destination and renamed over it,
so a crash leaves either the previous checkpoint or the new one, never half of one.
"""
import json
import os
import tempfile
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np

FORMAT_NAME = "fasttext-horovod-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "__meta__"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file."""


def save_checkpoint(path: str, arrays: Dict[str, np.ndarray], meta: dict) -> None:
    meta = dict(meta, format=FORMAT_NAME, format_version=FORMAT_VERSION)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays, **{_META_KEY: np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)})
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    """Arrays and metadata of a checkpoint; refuses files of another format or version."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no checkpoint here (train a model into this --model-dir first)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop(_META_KEY).tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: not a checkpoint of this project ({err})") from None
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a checkpoint of this project")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')} "
                              f"but this version reads {FORMAT_VERSION}; retrain or use the matching release")
    return arrays, meta


def write_json_atomic(path: str, data: dict) -> None:
    """Write JSON via a temporary file and rename, like checkpoints."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
