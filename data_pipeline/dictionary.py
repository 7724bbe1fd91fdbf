"""fastText's dictionary (`src/dictionary.cc`) for supervised training: words, labels, hashing.

One owner for text -> ids, so training, evaluation, prediction and export never disagree.
Ids are fastText's own: words sorted by count with libstdc++'s (unstable) `std::sort`,
word n-grams at `nwords + (h % bucket)` with fastText's 64-bit combination of 32-bit
FNV-1a word hashes, labels numbered separately in the same sort order.

A pruned dictionary (fastText's `Dictionary::prune`, made by `quantize --cutoff`) keeps
some words and some n-gram buckets: a kept bucket h is row `nwords + pruneidx[h]`, and
words and buckets it does not keep are dropped from a line, as fastText's `pushHash` does.
"""
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, repeat
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .normalize import LABEL_PREFIX
from .ragged import offsets_of
from .readers import EOS

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619
_NGRAM_MULTIPLIER = np.uint64(116049371)
_WORD, _LABEL = 0, 1


def hash_token(token: bytes) -> int:
    """fastText's `Dictionary::hash`: FNV-1a over bytes read as *signed* chars, as int32.

    A byte >= 0x80 is sign-extended before the xor (`uint32_t(int8_t(c))`); the result is
    returned as the signed int32 fastText stores in its `word_hashes` vector. This is the
    rule as fastText writes it; `hash_tokens` computes it for many tokens at once.
    """
    h = _FNV_OFFSET
    for byte in token:
        h ^= byte | 0xFFFFFF00 if byte > 127 else byte
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h - (1 << 32) if h >= (1 << 31) else h


_VECTOR_HASH_MAX_LENGTH = 64  # longer tokens (rare) are hashed one by one, not padding every step
_VECTOR_HASH_MIN_TOKENS = 256  # fewer are hashed one by one: each byte position costs ~10 numpy calls


def hash_tokens(tokens: Sequence[bytes]) -> np.ndarray:
    """`hash_token` of every token (int32), with numpy: one step per byte position, not per byte.

    Tokens are sorted longest first, so the tokens still being hashed at position j are a
    prefix. uint32 arithmetic wraps mod 2^32, as fastText's does.
    """
    if len(tokens) < _VECTOR_HASH_MIN_TOKENS:
        return np.fromiter(map(hash_token, tokens), dtype=np.int32, count=len(tokens))
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    hashes = np.empty(len(tokens), dtype=np.int32)
    long = np.flatnonzero(lengths > _VECTOR_HASH_MAX_LENGTH)
    hashes[long] = [hash_token(tokens[i]) for i in long]
    short = np.flatnonzero(lengths <= _VECTOR_HASH_MAX_LENGTH)
    order = short[np.argsort(-lengths[short], kind="stable")]
    by_length = lengths[order]
    starts = offsets_of(lengths)[:-1][order]
    data = np.frombuffer(b"".join(tokens), dtype=np.int8)
    h = np.full(len(order), _FNV_OFFSET, dtype=np.uint32)
    for position in range(int(by_length[0]) if len(order) else 0):
        active = int(np.searchsorted(-by_length, -position, side="left"))  # tokens longer than `position`
        # uint32(int8(c)): sign-extend each byte, as fastText reads chars signed.
        h[:active] = (h[:active] ^ data[starts[:active] + position].astype(np.int32).view(np.uint32)) * \
            np.uint32(_FNV_PRIME)
    hashes[order] = h.view(np.int32)
    return hashes


def word_ngram_buckets(hashes: np.ndarray, doc_ends: np.ndarray, n: int, bucket: int) -> np.ndarray:
    """Bucket of every word n-gram (orders 2..n) of concatenated documents, in fastText's order.

    `hashes` holds the int32 hash of every word of every document (out-of-vocabulary words
    included, as fastText does), `doc_ends[p]` is the end of the document holding position p.
    Returns a (positions, n - 1) int64 array of buckets, -1 where the n-gram would cross a
    document end; row-major order is fastText's `addWordNgrams` order within a document.
    """
    # `uint64_t h = hashes[i]` sign-extends the int32 hash; all arithmetic wraps mod 2^64.
    extended = hashes.astype(np.int64).astype(np.uint64)
    positions = np.arange(len(hashes))
    out = np.full((len(hashes), max(n - 1, 0)), -1, dtype=np.int64)
    h = extended.copy()
    for order in range(2, n + 1):
        shift = order - 1
        valid = positions + shift < doc_ends
        nxt = np.zeros_like(extended)
        nxt[: max(len(extended) - shift, 0)] = extended[shift:]  # n may exceed the words given
        h = h * _NGRAM_MULTIPLIER + nxt
        out[valid, order - 2] = (h[valid] % np.uint64(bucket)).astype(np.int64)
    return out


@dataclass
class TokenTable:
    """What fastText's `getLine` makes of each distinct token of some text."""

    word_ids: np.ndarray    # int64, -1 for a token that is not a dictionary word
    label_ids: np.ndarray   # int64, -1 for a token that is not a known label
    is_label: np.ndarray    # bool: has the label prefix (known or not)
    hashes: np.ndarray      # int32 fastText hash (words only; 0 for labels)
    eos: int                # position of the EOS token, -1 if absent


def table_of_ids(ids: np.ndarray, is_label: np.ndarray, hashes: np.ndarray, eos: int) -> TokenTable:
    """The `TokenTable` of distinct tokens given their ids (word id, or label id for labels; -1 if
    unknown), which are labels, their `hash_tokens` and the position of EOS among them (-1 if absent)."""
    return TokenTable(np.where(is_label, -1, ids), np.where(is_label, ids, -1), is_label,
                      np.where(is_label, 0, hashes).astype(np.int32), eos)


def _label_mask(tokens: Sequence[bytes]) -> np.ndarray:
    return np.fromiter((t.startswith(LABEL_PREFIX) for t in tokens), dtype=bool, count=len(tokens))


@dataclass
class EncodedLines:
    """Lines as input rows and label ids, ragged (see `ragged.py`)."""

    ids: np.ndarray
    offsets: np.ndarray
    label_ids: np.ndarray
    label_offsets: np.ndarray
    num_tokens: np.ndarray  # tokens `getLine` read per line (up to its first EOS): drives lr decay


@dataclass
class Dictionary:
    """Vocabulary, labels and n-gram settings; `encode*` turn text into input-matrix rows.

    `pruneidx` is None for a full dictionary; for a pruned one, (n, 2) int64 pairs
    (bucket, row after the words) of the n-gram buckets it keeps (fastText's `pruneidx_`).
    """

    words: List[bytes]
    word_counts: np.ndarray
    labels: List[bytes]
    label_counts: np.ndarray
    ntokens: int
    bucket: int
    word_ngrams: int
    pruneidx: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.pruneidx is not None:
            self.pruneidx = np.asarray(self.pruneidx, dtype=np.int64).reshape(-1, 2)
            by_bucket = np.argsort(self.pruneidx[:, 0])
            self._kept_buckets, self._kept_rows = self.pruneidx[by_bucket].T

    @cached_property
    def _word_ids(self) -> Dict[bytes, int]:
        """Built on first use: building a corpus never looks words up (see `from_counts_with_ids`)."""
        return {w: i for i, w in enumerate(self.words)}

    def release_word_index(self):
        """Free the word -> id index (~160 MB for 1.95M words) when no lookup follows for long
        (training, once its test and validation files are encoded); a later lookup rebuilds it."""
        self.__dict__.pop("_word_ids", None)

    @cached_property
    def _label_ids(self) -> Dict[bytes, int]:
        return {w: i for i, w in enumerate(self.labels)}

    @property
    def nwords(self) -> int:
        return len(self.words)

    @property
    def nlabels(self) -> int:
        return len(self.labels)

    @property
    def num_input_rows(self) -> int:
        """Rows of the input (embedding) matrix: words then hash buckets (the kept ones, if pruned)."""
        if self.is_pruned:
            return self.nwords + len(self.pruneidx)
        return self.nwords + (self.bucket if self.word_ngrams > 1 else 0)

    @property
    def is_pruned(self) -> bool:
        return self.pruneidx is not None

    def pruned(self, kept_input_rows: Sequence[int]) -> Tuple["Dictionary", np.ndarray]:
        """fastText's `Dictionary::prune`: the dictionary of these input rows only.

        Kept words stay in their order (their ids close up), every label stays, and the
        kept n-gram buckets become rows after the words in the order given (fastText
        gives them by decreasing norm). Returns the pruned dictionary and, for each of its
        input rows, the row of this dictionary it comes from.
        """
        if self.is_pruned:
            raise ValueError("the dictionary is already pruned")
        kept = np.asarray(kept_input_rows, dtype=np.int64)
        if len(np.unique(kept)) != len(kept) or np.any((kept < 0) | (kept >= self.num_input_rows)):
            raise ValueError(f"kept rows must be distinct input rows (0..{self.num_input_rows - 1})")
        words = np.sort(kept[kept < self.nwords])
        buckets = kept[kept >= self.nwords] - self.nwords
        pruneidx = np.stack([buckets, np.arange(len(buckets))], axis=1)
        dictionary = Dictionary([self.words[i] for i in words], self.word_counts[words], self.labels,
                                self.label_counts, self.ntokens, self.bucket, self.word_ngrams, pruneidx)
        return dictionary, np.concatenate([words, buckets + self.nwords])

    @classmethod
    def build(cls, lines: Iterable[Sequence[bytes]], min_count: int = 1, min_count_label: int = 1,
              bucket: int = 2_000_000, word_ngrams: int = 1) -> "Dictionary":
        """Count the tokens of each line and threshold/sort them as `Dictionary::readFromFile`."""
        counts: Counter = Counter()
        for tokens in lines:
            counts.update(tokens)
        return cls.from_counts(list(counts), np.fromiter(counts.values(), dtype=np.int64, count=len(counts)),
                               min_count, min_count_label, bucket, word_ngrams)

    @classmethod
    def from_counts(cls, tokens: List[bytes], counts: np.ndarray, min_count: int = 1, min_count_label: int = 1,
                    bucket: int = 2_000_000, word_ngrams: int = 1) -> "Dictionary":
        """The dictionary of distinct tokens (in order of first occurrence) and their counts.

        The order of first occurrence decides how libstdc++'s unstable sort places
        entries of equal count, so it must be the file's.
        """
        return cls.from_counts_with_ids(tokens, counts, _label_mask(tokens), min_count, min_count_label, bucket,
                                        word_ngrams)[0]

    @classmethod
    def from_counts_with_ids(cls, tokens: List[bytes], counts: np.ndarray, is_label: np.ndarray, min_count: int,
                             min_count_label: int, bucket: int, word_ngrams: int) -> Tuple["Dictionary", np.ndarray]:
        """`from_counts`, given which tokens are labels, and each token's id (int64): its word id,
        or label id for a label, -1 if thresholded away (see `table_of_ids`)."""
        from .cxx_sort import cxx_sort_order  # here, not at the top: numba's import costs a second, and
        # only building a dictionary needs it (prediction, evaluation and export load one)
        # Dictionary::threshold: std::sort by (type asc, count desc), then drop rare entries.
        max_count = int(counts.max(initial=0)) + 1
        order = cxx_sort_order((is_label * max_count - counts).tolist())
        sorted_counts, sorted_kinds = counts[order], is_label[order]
        keep_words = ~sorted_kinds & (sorted_counts >= min_count)
        keep_labels = sorted_kinds & (sorted_counts >= min_count_label)
        word_order, label_order = order[keep_words], order[keep_labels]
        ids = np.full(len(tokens), -1, dtype=np.int64)
        ids[word_order] = np.arange(len(word_order))
        ids[label_order] = np.arange(len(label_order))
        # An object array gathers the tokens in C, not one Python index at a time.
        as_objects = np.empty(len(tokens), dtype=object)
        as_objects[:] = tokens
        dictionary = cls(as_objects[word_order].tolist(), sorted_counts[keep_words],
                         as_objects[label_order].tolist(), sorted_counts[keep_labels],
                         int(counts.sum()), bucket, word_ngrams)
        return dictionary, ids

    def word_id(self, word: bytes) -> int:
        return self._word_ids.get(word, -1)

    def label_id(self, label: bytes) -> int:
        return self._label_ids.get(label, -1)

    def table(self, tokens: Sequence[bytes], hashes: Optional[np.ndarray] = None) -> TokenTable:
        """The `TokenTable` of these distinct tokens; `hashes`, if given, are their `hash_tokens`."""
        is_label = _label_mask(tokens)
        word_ids = np.fromiter(map(self._word_ids.get, tokens, repeat(-1)), dtype=np.int64, count=len(tokens))
        label_ids = np.fromiter(map(self._label_ids.get, tokens, repeat(-1)), dtype=np.int64, count=len(tokens))
        return table_of_ids(np.where(is_label, label_ids, word_ids), is_label,
                            hash_tokens(tokens) if hashes is None else hashes,
                            tokens.index(EOS) if EOS in tokens else -1)

    def encode_positions(self, positions: np.ndarray, lengths: np.ndarray, table: TokenTable) -> EncodedLines:
        """Encode lines given as positions into `table`'s distinct tokens, all at once.

        Per line this is fastText's `getLine`: reading stops at the first EOS, even a
        literal `</s>` in the text; words give their id when in the vocabulary and their
        hash always; labels the dictionary does not know are dropped.
        """
        line_of = np.repeat(np.arange(len(lengths)), lengths)
        if table.eos >= 0:
            is_eos = positions == table.eos
            eos_before = np.cumsum(is_eos) - is_eos
            first_of_line = offsets_of(lengths)[:-1]
            eos_before_line = np.append(eos_before, 0)[first_of_line]
            read = eos_before == eos_before_line[line_of]
            positions, line_of = positions[read], line_of[read]
        labelled = table.is_label[positions]
        words, word_line = positions[~labelled], line_of[~labelled]
        ids, offsets = self._input_rows(table.word_ids[words], table.hashes[words],
                                        np.bincount(word_line, minlength=len(lengths)))
        label_ids, label_line = table.label_ids[positions[labelled]], line_of[labelled]
        known = label_ids >= 0
        return EncodedLines(ids, offsets, label_ids[known],
                            offsets_of(np.bincount(label_line[known], minlength=len(lengths))),
                            np.bincount(line_of, minlength=len(lengths)))

    def encode_lines(self, lines: Sequence[Sequence[bytes]]) -> EncodedLines:
        """Encode tokenised lines (see `readers.tokenize`)."""
        flat = list(chain.from_iterable(lines))
        distinct = list(dict.fromkeys(flat))  # first-occurrence order; all in C
        position_of = dict(zip(distinct, range(len(distinct))))
        positions = np.fromiter(map(position_of.__getitem__, flat), dtype=np.int64, count=len(flat))
        lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
        return self.encode_positions(positions, lengths, self.table(distinct))

    def encode_many(self, documents: Sequence[Sequence[bytes]]) -> Tuple[np.ndarray, np.ndarray]:
        """Input rows of documents given as words: (flat int64 ids, int64 offsets of len+1)."""
        encoded = self.encode_lines(documents)
        return encoded.ids, encoded.offsets

    def encode(self, words: Sequence[bytes]) -> np.ndarray:
        """Input rows of one document (its words must end with EOS, as fastText's lines do)."""
        return self.encode_many([words])[0]

    def _input_rows(self, word_ids: np.ndarray, hashes: np.ndarray, lengths: np.ndarray):
        """Per line, in-vocabulary word ids in text order, then each position's n-grams."""
        line_of = np.repeat(np.arange(len(lengths)), lengths)
        known = word_ids >= 0
        parts_ids, parts_line = [word_ids[known]], [line_of[known]]
        if self.word_ngrams > 1 and len(word_ids):
            buckets = word_ngram_buckets(hashes, np.cumsum(lengths)[line_of], self.word_ngrams, self.bucket)
            rows = self._ngram_rows(buckets)
            valid = rows >= 0
            parts_ids.append(rows[valid])
            parts_line.append(np.broadcast_to(line_of[:, None], buckets.shape)[valid])
        ids, lines = np.concatenate(parts_ids), np.concatenate(parts_line)
        # A stable sort by line keeps words before n-grams, each in fastText's order.
        return ids[np.argsort(lines, kind="stable")], offsets_of(np.bincount(lines, minlength=len(lengths)))

    def _ngram_rows(self, buckets: np.ndarray) -> np.ndarray:
        """Input row of each n-gram bucket; -1 where there is none (a crossing n-gram, or a
        bucket pruning dropped, as fastText's `pushHash`)."""
        if not self.is_pruned:
            return np.where(buckets >= 0, buckets + self.nwords, -1)
        if not len(self.pruneidx):  # no bucket kept: no n-gram at all
            return np.full_like(buckets, -1)
        at = np.minimum(np.searchsorted(self._kept_buckets, buckets), len(self._kept_buckets) - 1)
        return np.where(self._kept_buckets[at] == buckets, self._kept_rows[at] + self.nwords, -1)

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """Pickle-free representation for checkpoints (see `from_arrays`)."""
        arrays = {
            "dict_words": _pack_tokens(self.words),
            "dict_word_counts": self.word_counts,
            "dict_labels": _pack_tokens(self.labels),
            "dict_label_counts": self.label_counts,
            "dict_settings": np.array([self.ntokens, self.bucket, self.word_ngrams], dtype=np.int64),
        }
        if self.is_pruned:
            arrays["dict_pruneidx"] = self.pruneidx
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "Dictionary":
        ntokens, bucket, word_ngrams = (int(v) for v in arrays["dict_settings"])
        return cls(_unpack_tokens(arrays["dict_words"]), arrays["dict_word_counts"],
                   _unpack_tokens(arrays["dict_labels"]), arrays["dict_label_counts"],
                   ntokens, bucket, word_ngrams, arrays["dict_pruneidx"] if "dict_pruneidx" in arrays else None)


def _pack_tokens(tokens: Sequence[bytes]) -> np.ndarray:
    """Tokens joined by newlines (no token contains whitespace) as a uint8 array."""
    return np.frombuffer(b"\n".join(tokens), dtype=np.uint8)


def _unpack_tokens(packed: np.ndarray) -> List[bytes]:
    data = packed.tobytes()
    return data.split(b"\n") if data else []
