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
import io
import json
import mmap
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .dictionary import Dictionary, EncodedLines, TokenTable, table_of_ids
from .errors import InputError
from .ragged import gather_rows, offsets_of
from .normalize import LABEL_PREFIX
from .readers import EOS, check_readable_file, read_records_of_piece
from .staging import building_dir, remove_abandoned_builds
from .vectors import add_pretrained_words
from .worker_pool import ordered_map, usable_cores

if TYPE_CHECKING:  # imported where used: numba's import costs a second (see `_spill_tokens`)
    from .distinct_tokens import CorpusTokens

SHARD_FORMAT_VERSION = 1
VALIDATION_SHARD = "validation"
_PIECE_BYTES = 2 << 20       # text a pass-1 task tokenises
_TOKENS_PER_BLOCK = 1 << 19  # tokens a pass-2 task encodes (its arrays take ~100 bytes a token)
LABELLED_FILE_PREFIX = "labelled-"  # a corpus directory's encodings of test and validation files
_LABELLED_DOCUMENTS = "documents"


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
    """The documents of one shard; `ids` stays on disk until touched (a read-only map of `pages`)."""

    ids: np.ndarray
    offsets: np.ndarray
    num_tokens: np.ndarray
    label_offsets: np.ndarray
    label_ids: np.ndarray
    pages: mmap.mmap

    def release_pages(self):
        """Drop the pages of `ids` read so far from this process's resident memory; they stay
        in the page cache, and a later read maps them again (a minor fault each). An epoch
        reads every page of every shard: 780 MB counted as the trainer's own at Yelp's size."""
        self.pages.madvise(mmap.MADV_DONTNEED)

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
        return _open_shard(os.path.join(self.directory, name))


def _open_shard(path: str) -> Shard:
    ids, pages = _map_npy(path + ".ids.npy")
    with np.load(path + ".docs.npz", allow_pickle=False) as docs:
        return Shard(ids, docs["offsets"], docs["num_tokens"], docs["label_offsets"], docs["label_ids"], pages)


def _map_npy(path: str) -> Tuple[np.ndarray, mmap.mmap]:
    """A 1-D `.npy` file as a read-only array over a map this code owns (`Shard.release_pages`)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
        if len(shape) != 1:
            raise ValueError(f"{len(shape)}-D array, not 1-D")
        offset = handle.tell()
        pages = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(pages, dtype=dtype, count=shape[0], offset=offset), pages


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


@dataclass
class DocumentRows:
    """Some documents' input rows and labels, ragged (what a shard stores, before offsets)."""

    ids: np.ndarray           # int32, every document's input rows, concatenated
    lengths: np.ndarray       # int64 rows per document
    num_tokens: np.ndarray    # int64 fastText tokens per document
    label_ids: np.ndarray     # int32
    label_counts: np.ndarray  # int64 labels per document

    @classmethod
    def of(cls, encoded: EncodedLines, lines: np.ndarray) -> "DocumentRows":
        ids, lengths = gather_rows(encoded.ids, encoded.offsets, lines)
        labels, label_counts = gather_rows(encoded.label_ids, encoded.label_offsets, lines)
        return cls(ids.astype(np.int32), lengths, encoded.num_tokens[lines], labels.astype(np.int32), label_counts)


def _npy_header(length: int) -> bytes:
    """`np.save`'s header for a 1-D int32 array of `length` values."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int32)),
                                                  "fortran_order": False, "shape": (length,)})
    return buffer.getvalue()


class _ShardWriter:
    """Writes one shard as its documents arrive: input rows straight to `ids.npy`, the
    per-document arrays (a few bytes a document) at the end, in `docs.npz`."""

    def __init__(self, path: str):
        self.path = path
        self._ids = open(path + ".ids.npy", "wb")
        self._header_size = self._ids.write(_npy_header(0))
        self.num_ids = 0
        self.lengths, self.num_tokens, self.labels, self.label_counts = [], [], [], []

    def add(self, docs: DocumentRows):
        docs.ids.tofile(self._ids)
        self.num_ids += len(docs.ids)
        self.lengths.append(docs.lengths)
        self.num_tokens.append(docs.num_tokens)
        self.labels.append(docs.label_ids)
        self.label_counts.append(docs.label_counts)

    @property
    def num_docs(self) -> int:
        return int(sum(len(lengths) for lengths in self.lengths))

    @property
    def total_tokens(self) -> int:
        return int(sum(t.sum() for t in self.num_tokens))

    def close(self):
        """Complete the files: the header of `ids.npy` gets its length, the same bytes `np.save` writes."""
        header = _npy_header(self.num_ids)
        if len(header) != self._header_size:
            raise AssertionError(f"npy header grew from {self._header_size} to {len(header)} bytes")
        self._ids.seek(0)
        self._ids.write(header)
        self._ids.close()

        def joined(parts, dtype):
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        np.savez(self.path + ".docs.npz", offsets=offsets_of(joined(self.lengths, np.int64)),
                 num_tokens=joined(self.num_tokens, np.int64),
                 label_offsets=offsets_of(joined(self.label_counts, np.int64)),
                 label_ids=joined(self.labels, np.int32))


def labelled_file_shard(path: str, dictionary: Dictionary, num_classes: Optional[int] = None,
                        corpus_dir: Optional[str] = None) -> Shard:
    """A test or validation file's documents encoded with `dictionary`, as a memory-mapped shard.

    Evaluation reads it a batch at a time, so a test set costs no resident memory between
    evaluations: held as arrays, Amazon full's 650,000 test documents took ~1 GB. With
    `corpus_dir` (the corpus directory `dictionary` comes from) the shard is kept there, named
    by the file's bytes, and reused by the next run; without it, it is built in a temporary
    directory removed once mapped. A label the dictionary does not know is an error, with its line.
    """
    check_readable_file(path)  # before hashing it, so a bad path is an InputError
    if corpus_dir is None:
        with tempfile.TemporaryDirectory(prefix="labelled-file-") as scratch:  # the map outlives the files
            return labelled_file_shard(path, dictionary, num_classes, scratch)
    ident = json.dumps({"input": file_digest(path), "num_classes": num_classes, "format": SHARD_FORMAT_VERSION},
                       sort_keys=True)
    final = os.path.join(corpus_dir, LABELLED_FILE_PREFIX + hashlib.sha256(ident.encode()).hexdigest()[:20])

    def is_complete(directory: str) -> bool:
        return os.path.isfile(os.path.join(directory, _LABELLED_DOCUMENTS + ".docs.npz"))
    remove_abandoned_builds(corpus_dir)
    if not is_complete(final):
        with building_dir(corpus_dir, final, is_complete) as staging:
            _write_labelled_file(path, dictionary, num_classes, os.path.join(staging, _LABELLED_DOCUMENTS))
    return _open_shard(os.path.join(final, _LABELLED_DOCUMENTS))


def _write_labelled_file(path: str, dictionary: Dictionary, num_classes: Optional[int], shard_path: str):
    """Read and encoded a piece at a time by preprocessing's compiled kernels (`tokenize_piece`,
    `encode_positions`): Python's reading and encoding a record at a time took 1.3 s of a Debian
    run's start (9,381 test documents, 4 MB). Memory stays bounded by a piece (a whole test set's
    tokens as Python objects took 1.3 GB at Yelp's size)."""
    from .file_pieces import record_pieces, tokenize_piece  # numba: the trainer and evaluation have it already
    from .line_encoding import encode_positions
    writer = _ShardWriter(shard_path)
    for piece in record_pieces(path, _PIECE_BYTES, num_classes):
        tokens = tokenize_piece(piece).tokens
        table = dictionary.table(tokens.tokens, tokens.hashes)
        if np.any(table.is_label & (table.label_ids < 0)):
            _raise_unknown_label(piece, dictionary)
        rows = DocumentRows.of(encode_positions(dictionary, tokens.positions, tokens.lengths, table),
                               np.arange(len(tokens.lengths)))
        rows.num_tokens -= rows.label_counts  # a labelled file's documents count their words read, as before
        writer.add(rows)
    if not writer.num_docs:
        raise InputError(path, "no documents: the file is empty")
    writer.close()


def _raise_unknown_label(piece, dictionary: Dictionary):
    """The error for the piece's first record with a label the dictionary does not know, naming its line."""
    for record in read_records_of_piece(piece.path, piece.data, piece.first_line, piece.num_classes):
        unknown = [label for label in record.labels if dictionary.label_id(label) < 0]
        if unknown:
            raise InputError(piece.path, f"class {unknown[0][len(LABEL_PREFIX):].decode()!r} was not in the "
                                         "training data", record.line)


def held_out_lines(num_lines: int, fraction: float, seed: int) -> np.ndarray:
    """A mask choosing round(fraction * num_lines) lines, drawn with `seed`."""
    mask = np.zeros(num_lines, dtype=bool)
    mask[np.random.default_rng([seed, num_lines]).permutation(num_lines)[:round(fraction * num_lines)]] = True
    return mask


def preprocess(train_path: str, settings: CorpusSettings, cache_dir: str,
               num_classes: Optional[int] = None,
               on_progress: Optional[Callable[[int, int], None]] = None,
               extra_words: Optional[Sequence[bytes]] = None, workers: Optional[int] = None) -> ShardedCorpus:
    """Build (or reuse) the sharded corpus for `train_path`; returns it opened.

    Streaming, on `workers` processes (default: every usable core), memory bounded by the
    dictionary plus a few pieces in flight, whatever the corpus size. Pass 1 tokenises
    pieces of the file in parallel and spills every token as a 4-byte position into the
    corpus's distinct tokens (kept in order of first occurrence, which decides how the
    dictionary's sort breaks ties); the dictionary is sorted from their counts; pass 2
    encodes the spilled positions to input rows in parallel, block by block, and appends
    them to the shards. `on_progress(documents, bytes)` follows pass 1. With
    `settings.valid_fraction`, the held-out lines are left out of the dictionary and the
    shards and stored as the validation set. `extra_words` join the vocabulary as fastText
    adds the words of pretrained vectors (see `vectors.add_pretrained_words`). Everything
    is built in a staging directory renamed into place at the end: a failure, in this
    process or a worker, leaves nothing behind.
    """
    check_readable_file(train_path)  # before hashing it, so a bad path is an InputError
    final = os.path.join(cache_dir, corpus_key(train_path, settings, extra_words))
    remove_abandoned_builds(cache_dir)
    if _is_complete(final):
        return ShardedCorpus(final)
    with building_dir(cache_dir, final, _is_complete) as staging:
        _build(train_path, settings, staging, num_classes, on_progress, extra_words, workers or usable_cores())
    return ShardedCorpus(final)


@dataclass
class _SpilledCorpus:
    """Pass 1's result: the distinct tokens and every record's tokens as positions into them, on disk."""

    index: "CorpusTokens"  # the distinct tokens, their hashes and counts (all records)
    lengths: np.ndarray   # int32 tokens per record
    spill: str            # int32 positions of every record's tokens, concatenated


def _spill_tokens(train_path, num_classes, spill: str, on_progress, workers: int) -> _SpilledCorpus:
    # Imported here, not at the top: numba's import costs a second, and only building a corpus needs it
    # (workers fork after it, so they inherit the compiled kernels).
    from .distinct_tokens import CorpusTokens
    from .file_pieces import piece_lines, record_pieces, tokenize_piece
    index, lengths = CorpusTokens(), []

    def worker_died(piece):
        first, last = piece_lines(piece)
        return InputError(train_path, f"a preprocessing worker died while reading lines {first}-{last}", first)
    with open(spill, "wb") as out, \
            ordered_map(tokenize_piece, record_pieces(train_path, _PIECE_BYTES, num_classes), workers,
                        2 * workers + 1, worker_died) as pieces:
        for piece in pieces:
            index.add(piece.tokens)[piece.tokens.positions].tofile(out)
            lengths.append(piece.tokens.lengths)
            if on_progress:
                on_progress(len(piece.tokens.lengths), piece.num_bytes)
    return _SpilledCorpus(index, np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32), spill)


def _record_blocks(lengths: np.ndarray, tokens_per_block: int) -> List[Tuple[int, int, int]]:
    """(first record, end record, first token) of consecutive blocks of whole records, about
    `tokens_per_block` tokens each."""
    starts = offsets_of(lengths)[:-1]
    block_of = starts // tokens_per_block
    firsts = np.flatnonzero(np.diff(block_of, prepend=-1)).tolist()
    ends = firsts[1:] + [len(lengths)]
    return [(a, b, int(starts[a])) for a, b in zip(firsts, ends)]


def _held_out_counts(corpus: _SpilledCorpus, held_out: np.ndarray) -> np.ndarray:
    """Occurrences of each distinct token in the held-out records, read back from the spill."""
    counts = np.zeros(corpus.index.count, dtype=np.int64)
    for first, end, first_token in _record_blocks(corpus.lengths, _TOKENS_PER_BLOCK):
        lengths = corpus.lengths[first:end]
        positions = np.fromfile(corpus.spill, dtype=np.int32, count=int(lengths.sum()), offset=4 * first_token)
        counts += np.bincount(positions[np.repeat(held_out[first:end], lengths)], minlength=len(counts))
    return counts


_encoding = {}  # a pass-2 worker's dictionary, token table and encoder, inherited from the parent (see `ordered_map`)


def _start_encoder(dictionary: Dictionary, table: TokenTable, encode: Callable, num_shards: int):
    _encoding.update(dictionary=dictionary, table=table, encode=encode, num_shards=num_shards)


def _encode_block(task) -> Tuple[List[DocumentRows], DocumentRows]:
    """(trainable documents, held-out documents) of a block of spilled records; runs in a worker.

    The trainable ones come split by their number in the block modulo the number of shards:
    part g goes to shard (documents before the block + g) % num_shards, so the parent only
    appends.
    """
    spill, first_token, lengths, held = task
    positions = np.fromfile(spill, dtype=np.int32, count=int(lengths.sum()), offset=4 * first_token)
    encoded = _encoding["encode"](_encoding["dictionary"], positions, lengths, _encoding["table"])
    labelled = np.diff(encoded.label_offsets) > 0
    # fastText skips a line with no known label or no input row (Model::update).
    trainable = np.flatnonzero(~held & labelled & (np.diff(encoded.offsets) > 0))
    num_shards = _encoding["num_shards"]
    return ([DocumentRows.of(encoded, trainable[g::num_shards]) for g in range(num_shards)],
            DocumentRows.of(encoded, np.flatnonzero(held & labelled)))


def _build(train_path, settings: CorpusSettings, staging: str, num_classes, on_progress, extra_words, workers: int):
    from .line_encoding import encode_positions  # here, as pass 1's kernels: only building a corpus needs numba
    spill = os.path.join(staging, "positions.spill")
    corpus = _spill_tokens(train_path, num_classes, spill, on_progress, workers)
    tokens = corpus.index.tokens
    held_out = held_out_lines(len(corpus.lengths), settings.valid_fraction, settings.split_seed)
    counts = corpus.index.counts - _held_out_counts(corpus, held_out) if held_out.any() else corpus.index.counts
    is_label = corpus.index.label_mask()
    dictionary, ids = Dictionary.from_counts_with_ids(tokens, counts, is_label, settings.min_count,
                                                      settings.min_count_label, settings.bucket, settings.word_ngrams)
    if len(corpus.lengths) == 0 or (dictionary.nlabels == 0 and settings.min_count_label <= 1):
        raise InputError(train_path, "no documents with a label: the file is empty")
    if dictionary.nlabels == 0:
        raise InputError(train_path, f"no label occurs --min-count-label {settings.min_count_label} times: "
                                     "the label set is empty; lower --min-count-label")
    if dictionary.nwords == 0:
        raise InputError(train_path, f"no word occurs --min-count {settings.min_count} times: "
                                     "the vocabulary is empty; lower --min-count")
    if extra_words:
        dictionary = add_pretrained_words(dictionary, extra_words)
        table = dictionary.table(tokens, corpus.index.hashes)
    else:
        table = table_of_ids(ids, is_label, corpus.index.hashes, tokens.index(EOS))  # every record ends in EOS
    corpus.index = tokens = None  # the table is all pass 2 needs: the workers fork without the token index
    blocks = [(spill, first_token, corpus.lengths[a:b], held_out[a:b])
              for a, b, first_token in _record_blocks(corpus.lengths, _TOKENS_PER_BLOCK)]

    def worker_died(task):
        return InputError(train_path, "a preprocessing worker died while encoding the documents")
    writers = [_ShardWriter(os.path.join(staging, f"shard-{k:05d}")) for k in range(settings.num_shards)]
    validation = _ShardWriter(os.path.join(staging, VALIDATION_SHARD)) if settings.valid_fraction else None
    docs_seen = 0
    with ordered_map(_encode_block, blocks, workers, 2 * workers + 1, worker_died,
                     _start_encoder, (dictionary, table, encode_positions, settings.num_shards)) as encoded_blocks:
        for parts, held in encoded_blocks:
            if validation:
                validation.add(held)
            for g, part in enumerate(parts):
                writers[(docs_seen + g) % settings.num_shards].add(part)
            docs_seen += sum(len(part.lengths) for part in parts)
    if validation and not validation.num_docs:
        raise InputError(train_path, f"--valid-fraction {settings.valid_fraction} of {len(corpus.lengths)} documents "
                                     "leaves no labelled validation document")
    os.remove(spill)
    for writer in writers + ([validation] if validation else []):
        writer.close()
    np.savez(os.path.join(staging, "dictionary.npz"), **dictionary.to_arrays())
    meta = {"format": SHARD_FORMAT_VERSION, "source": os.path.abspath(train_path),
            "settings": asdict(settings),
            "docs_per_shard": [w.num_docs for w in writers],
            "tokens_per_shard": [w.total_tokens for w in writers]}
    with open(os.path.join(staging, "meta.json"), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=1)
