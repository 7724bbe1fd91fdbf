"""Preprocess a labelled corpus once into memory-mapped shards of input-matrix rows.

A corpus directory holds the dictionary and `num_shards` shards; document i goes to shard
i % num_shards, so every shard sees every part of a file that is sorted by class. A shard
is three files: `ids.npy` (all input rows, memory-mapped), `docs.npz` (per-document row
offsets, fastText token counts, label offsets and label ids). Reading shard k of n touches
only shard k. Documents held out for validation (`valid_fraction`) form one more shard,
`validation`, outside the rotation. The directory name is a hash of the input bytes and the
settings (and of any words added from pretrained vectors), so a rerun with the same input
reuses it, and it appears atomically (built aside, then renamed).
"""
import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .dictionary import Dictionary, EncodedLines, TokenIndex
from .errors import InputError
from .ragged import gather_rows, offsets_of
from .readers import check_readable_file, read_records
from .staging import building_dir, remove_abandoned_builds
from .vectors import add_pretrained_words

SHARD_FORMAT_VERSION = 1
VALIDATION_SHARD = "validation"
_CHUNK_LINES = 20_000


@dataclass(frozen=True)
class CorpusSettings:
    """Everything besides the input bytes that decides the shards' contents."""

    min_count: int = 1
    min_count_label: int = 1
    bucket: int = 2_000_000
    word_ngrams: int = 1
    num_shards: int = 8
    valid_fraction: float = 0.0  # this share of the documents is held out for validation...
    split_seed: int = 0          # ...chosen by this seed


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
        try:
            with open(os.path.join(directory, "meta.json"), encoding="utf-8") as handle:
                self.meta = json.load(handle)
            with np.load(os.path.join(directory, "dictionary.npz"), allow_pickle=False) as arrays:
                self.dictionary = Dictionary.from_arrays(arrays)
            if not len(self.docs_per_shard) == len(self.tokens_per_shard) == self.num_shards:
                raise ValueError("its metadata lists another number of shards")
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
            raise InputError(directory, f"damaged corpus cache ({err}); delete this directory and run "
                                        "again to rebuild it") from None

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
        return self._open(f"shard-{k:05d}")

    def validation(self) -> Optional[Shard]:
        """The held-out documents (see `CorpusSettings.valid_fraction`), if any."""
        return self._open(VALIDATION_SHARD) if self.meta["settings"].get("valid_fraction") else None

    def _open(self, name: str) -> Shard:
        path = os.path.join(self.directory, name)
        with np.load(path + ".docs.npz", allow_pickle=False) as docs:
            return Shard(np.load(path + ".ids.npy", mmap_mode="r"), docs["offsets"], docs["num_tokens"],
                         docs["label_offsets"], docs["label_ids"])


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_complete(directory: str) -> bool:
    """meta.json is written last: a corpus directory that has it is whole."""
    return os.path.isfile(os.path.join(directory, "meta.json"))


def corpus_key(train_path: str, settings: CorpusSettings, extra_words: Optional[Sequence[bytes]] = None) -> str:
    """Name of the corpus directory: changes whenever the input, a setting or the extra words do."""
    ident = json.dumps({"input": file_digest(train_path), "settings": asdict(settings),
                        "extra_words": hashlib.sha256(b"\n".join(extra_words)).hexdigest() if extra_words else None,
                        "format": SHARD_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


class _CorpusReader:
    """One pass over a corpus file: every line as positions into a `TokenIndex`, in chunks."""

    def __init__(self, path: str, num_classes: Optional[int], on_progress: Optional[Callable[[int], None]]):
        self.index = TokenIndex()
        self.chunks: List[Tuple[np.ndarray, np.ndarray]] = []  # (positions, line lengths)
        positions, lengths = [], []
        for record in read_records(path, num_classes):
            positions += self.index.add(record.tokens)
            lengths.append(len(record.tokens))
            if len(lengths) == _CHUNK_LINES:
                self._close_chunk(positions, lengths, on_progress)
                positions, lengths = [], []
        self._close_chunk(positions, lengths, on_progress)

    def _close_chunk(self, positions, lengths, on_progress):
        if lengths:
            self.chunks.append((np.array(positions, dtype=np.int32), np.array(lengths, dtype=np.int64)))
            if on_progress:
                on_progress(len(lengths))

    @property
    def num_lines(self) -> int:
        return sum(len(lengths) for _, lengths in self.chunks)

    def counts(self, held_out: np.ndarray) -> np.ndarray:
        """Occurrences of each distinct token in the lines not `held_out` (a mask over all lines)."""
        counts = np.zeros(len(self.index.positions), dtype=np.int64)
        for (positions, lengths), held in zip(self.chunks, self.chunk_masks(held_out)):
            counts += np.bincount(positions[np.repeat(~held, lengths)], minlength=len(counts))
        return counts

    def chunk_masks(self, mask: np.ndarray) -> List[np.ndarray]:
        """A mask over all lines cut into one per chunk."""
        return np.split(mask, np.cumsum([len(lengths) for _, lengths in self.chunks])[:-1])


class _ShardWriter:
    """Accumulates one shard's documents and writes its files."""

    def __init__(self):
        self.ids, self.lengths, self.num_tokens, self.labels, self.label_counts = [], [], [], [], []

    def add(self, encoded: EncodedLines, lines: np.ndarray):
        ids, lengths = gather_rows(encoded.ids, encoded.offsets, lines)
        labels, label_counts = gather_rows(encoded.label_ids, encoded.label_offsets, lines)
        self.ids.append(ids.astype(np.int32))
        self.lengths.append(lengths)
        self.num_tokens.append(encoded.num_tokens[lines])
        self.labels.append(labels.astype(np.int32))
        self.label_counts.append(label_counts)

    @property
    def num_docs(self) -> int:
        return int(sum(len(lengths) for lengths in self.lengths))

    def write(self, path: str):
        def joined(parts, dtype):
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        np.save(path + ".ids.npy", joined(self.ids, np.int32))
        np.savez(path + ".docs.npz", offsets=offsets_of(joined(self.lengths, np.int64)),
                 num_tokens=joined(self.num_tokens, np.int64),
                 label_offsets=offsets_of(joined(self.label_counts, np.int64)),
                 label_ids=joined(self.labels, np.int32))


def held_out_lines(num_lines: int, fraction: float, seed: int) -> np.ndarray:
    """A mask choosing round(fraction * num_lines) lines, drawn with `seed`."""
    mask = np.zeros(num_lines, dtype=bool)
    mask[np.random.default_rng([seed, num_lines]).permutation(num_lines)[:round(fraction * num_lines)]] = True
    return mask


def preprocess(train_path: str, settings: CorpusSettings, cache_dir: str,
               num_classes: Optional[int] = None,
               on_progress: Optional[Callable[[int], None]] = None,
               extra_words: Optional[Sequence[bytes]] = None) -> ShardedCorpus:
    """Build (or reuse) the sharded corpus for `train_path`; returns it opened.

    One pass over the text: lines become positions into the corpus's distinct tokens
    (4 bytes a token), the dictionary is sorted from their counts, and the positions are
    encoded to input rows chunk by chunk, vectorised. With `settings.valid_fraction`, the
    held-out lines are left out of the dictionary and the shards and stored as the
    validation set. `extra_words` join the vocabulary as fastText adds the words of
    pretrained vectors (see `vectors.add_pretrained_words`).
    """
    check_readable_file(train_path)  # before hashing it, so a bad path is an InputError
    final = os.path.join(cache_dir, corpus_key(train_path, settings, extra_words))
    remove_abandoned_builds(cache_dir)
    if _is_complete(final):
        return ShardedCorpus(final)
    corpus = _CorpusReader(train_path, num_classes, on_progress)
    tokens = corpus.index.tokens
    held_out = held_out_lines(corpus.num_lines, settings.valid_fraction, settings.split_seed)
    dictionary = Dictionary.from_counts(tokens, corpus.counts(held_out), settings.min_count,
                                        settings.min_count_label, settings.bucket, settings.word_ngrams)
    if corpus.num_lines == 0:
        raise InputError(train_path, "no documents with a label: the file is empty")
    if dictionary.nlabels == 0:
        raise InputError(train_path, f"no label occurs --min-count-label {settings.min_count_label} times: "
                                     "the label set is empty; lower --min-count-label")
    if dictionary.nwords == 0:
        raise InputError(train_path, f"no word occurs --min-count {settings.min_count} times: "
                                     "the vocabulary is empty; lower --min-count")
    if extra_words:
        dictionary = add_pretrained_words(dictionary, extra_words)
    table = dictionary.table(tokens)
    writers = [_ShardWriter() for _ in range(settings.num_shards)]
    validation = _ShardWriter()
    docs_seen = 0
    for (positions, lengths), held in zip(corpus.chunks, corpus.chunk_masks(held_out)):
        encoded = dictionary.encode_positions(positions, lengths, table)
        labelled = np.diff(encoded.label_offsets) > 0
        validation.add(encoded, np.flatnonzero(held & labelled))
        # fastText skips a line with no known label or no input row (Model::update).
        trainable = np.flatnonzero(~held & labelled & (np.diff(encoded.offsets) > 0))
        shard_of = (docs_seen + np.arange(len(trainable))) % settings.num_shards
        for k, writer in enumerate(writers):
            writer.add(encoded, trainable[shard_of == k])
        docs_seen += len(trainable)
    if settings.valid_fraction and not validation.num_docs:
        raise InputError(train_path, f"--valid-fraction {settings.valid_fraction} of {corpus.num_lines} documents "
                                     "leaves no labelled validation document")
    with building_dir(cache_dir, final, _is_complete) as staging:
        for k, writer in enumerate(writers):
            writer.write(os.path.join(staging, f"shard-{k:05d}"))
        if settings.valid_fraction:
            validation.write(os.path.join(staging, VALIDATION_SHARD))
        np.savez(os.path.join(staging, "dictionary.npz"), **dictionary.to_arrays())
        meta = {"format": SHARD_FORMAT_VERSION, "source": os.path.abspath(train_path),
                "settings": asdict(settings),
                "docs_per_shard": [w.num_docs for w in writers],
                "tokens_per_shard": [int(sum(t.sum() for t in w.num_tokens)) for w in writers]}
        with open(os.path.join(staging, "meta.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1)
    return ShardedCorpus(final)
