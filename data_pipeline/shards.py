"""Preprocess a labelled corpus once into memory-mapped shards of input-matrix rows.

A corpus directory holds the dictionary and `num_shards` shards; document i goes to shard
i % num_shards, so every shard sees every part of a file that is sorted by class. A shard
is three files: `ids.npy` (all input rows, memory-mapped), `docs.npz` (per-document row
offsets, fastText token counts, label offsets and label ids). Reading shard k of n touches
only shard k. The directory name is a hash of the input bytes and the settings, so a rerun
with the same input reuses it, and it appears atomically (built aside, then renamed).
"""
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, List, Optional

import numpy as np

from .dictionary import Dictionary
from .errors import InputError
from .readers import Record, check_readable_file, read_records

SHARD_FORMAT_VERSION = 1
_ENCODE_CHUNK = 20_000


@dataclass(frozen=True)
class CorpusSettings:
    """Everything besides the input bytes that decides the shards' contents."""

    min_count: int = 1
    min_count_label: int = 1
    bucket: int = 2_000_000
    word_ngrams: int = 1
    num_shards: int = 8


@dataclass
class Shard:
    """The documents of one shard; `ids` stays on disk until touched."""

    ids: np.ndarray
    offsets: np.ndarray
    num_tokens: np.ndarray
    label_offsets: np.ndarray
    label_ids: np.ndarray

    @property
    def num_docs(self) -> int:
        return len(self.offsets) - 1

    def doc_ids(self, doc: int) -> np.ndarray:
        return self.ids[self.offsets[doc]:self.offsets[doc + 1]]

    def doc_labels(self, doc: int) -> np.ndarray:
        return self.label_ids[self.label_offsets[doc]:self.label_offsets[doc + 1]]


class ShardedCorpus:
    """A preprocessed corpus on disk: its dictionary and its shards."""

    def __init__(self, directory: str):
        self.directory = directory
        with open(os.path.join(directory, "meta.json"), encoding="utf-8") as handle:
            self.meta = json.load(handle)
        with np.load(os.path.join(directory, "dictionary.npz"), allow_pickle=False) as arrays:
            self.dictionary = Dictionary.from_arrays(arrays)

    @property
    def num_shards(self) -> int:
        return self.meta["settings"]["num_shards"]

    @property
    def docs_per_shard(self) -> List[int]:
        return self.meta["docs_per_shard"]

    @property
    def tokens_per_shard(self) -> List[int]:
        return self.meta["tokens_per_shard"]

    def shard(self, k: int) -> Shard:
        path = os.path.join(self.directory, f"shard-{k:05d}")
        with np.load(path + ".docs.npz", allow_pickle=False) as docs:
            return Shard(np.load(path + ".ids.npy", mmap_mode="r"), docs["offsets"], docs["num_tokens"],
                         docs["label_offsets"], docs["label_ids"])


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_key(train_path: str, settings: CorpusSettings) -> str:
    """Name of the corpus directory: changes whenever the input or a setting does."""
    ident = json.dumps({"input": file_digest(train_path), "settings": asdict(settings),
                        "format": SHARD_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def _chunks(records: Iterator[Record], size: int) -> Iterator[List[Record]]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _ShardWriter:
    """Accumulates one shard's documents and writes its files."""

    def __init__(self):
        self.ids, self.lengths, self.num_tokens, self.labels, self.label_counts = [], [], [], [], []

    def add(self, ids: np.ndarray, num_tokens: int, label_ids: List[int]):
        self.ids.append(ids.astype(np.int32))
        self.lengths.append(len(ids))
        self.num_tokens.append(num_tokens)
        self.labels.extend(label_ids)
        self.label_counts.append(len(label_ids))

    def write(self, path: str):
        np.save(path + ".ids.npy", np.concatenate(self.ids) if self.ids else np.zeros(0, np.int32))
        np.savez(path + ".docs.npz",
                 offsets=np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64),
                 num_tokens=np.array(self.num_tokens, dtype=np.int64),
                 label_offsets=np.concatenate([[0], np.cumsum(self.label_counts)]).astype(np.int64),
                 label_ids=np.array(self.labels, dtype=np.int32))


def preprocess(train_path: str, settings: CorpusSettings, cache_dir: str,
               num_classes: Optional[int] = None,
               on_progress: Optional[Callable[[int], None]] = None) -> ShardedCorpus:
    """Build (or reuse) the sharded corpus for `train_path`; returns it opened.

    Two streaming passes over the file: one counts tokens for the dictionary, one encodes
    documents, so memory holds one chunk of documents, not the corpus.
    """
    check_readable_file(train_path)  # before hashing it, so a bad path is an InputError
    final = os.path.join(cache_dir, corpus_key(train_path, settings))
    if os.path.isfile(os.path.join(final, "meta.json")):
        return ShardedCorpus(final)
    dictionary = Dictionary.build((r.tokens for r in read_records(train_path, num_classes)),
                                  settings.min_count, settings.min_count_label,
                                  settings.bucket, settings.word_ngrams)
    if dictionary.nlabels == 0:
        raise InputError(train_path, "no documents with a label: the file is empty")
    writers = [_ShardWriter() for _ in range(settings.num_shards)]
    docs_seen = 0
    for chunk in _chunks(read_records(train_path, num_classes), _ENCODE_CHUNK):
        ids, offsets = dictionary.encode_many([r.words for r in chunk])
        for i, record in enumerate(chunk):
            label_ids = [dictionary.label_id(t) for t in record.labels]
            doc_ids = ids[offsets[i]:offsets[i + 1]]
            # fastText skips a line with no known label or no input row (Model::update).
            if len(doc_ids) and all(lid >= 0 for lid in label_ids) and label_ids:
                writers[docs_seen % settings.num_shards].add(doc_ids, len(record.tokens), label_ids)
                docs_seen += 1
        if on_progress:
            on_progress(len(chunk))
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".building-", dir=cache_dir)
    try:
        for k, writer in enumerate(writers):
            writer.write(os.path.join(staging, f"shard-{k:05d}"))
        np.savez(os.path.join(staging, "dictionary.npz"), **dictionary.to_arrays())
        meta = {"format": SHARD_FORMAT_VERSION, "source": os.path.abspath(train_path),
                "settings": asdict(settings),
                "docs_per_shard": [len(w.lengths) for w in writers],
                "tokens_per_shard": [int(sum(w.num_tokens)) for w in writers]}
        with open(os.path.join(staging, "meta.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1)
        if os.path.exists(final):  # another process built the same corpus meanwhile
            shutil.rmtree(staging)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ShardedCorpus(final)
