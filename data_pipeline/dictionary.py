"""fastText's dictionary (`src/dictionary.cc`) for supervised training: words, labels, hashing.

One owner for text -> ids, so training, evaluation, prediction and export never disagree.
Ids are fastText's own: words sorted by count with libstdc++'s (unstable) `std::sort`,
word n-grams at `nwords + (h % bucket)` with fastText's 64-bit combination of 32-bit
FNV-1a word hashes, labels numbered separately in the same sort order.
"""
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from .cxx_sort import cxx_sort_order
from .normalize import LABEL_PREFIX
from .readers import EOS

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619
_NGRAM_MULTIPLIER = np.uint64(116049371)
_WORD, _LABEL = 0, 1


def hash_token(token: bytes) -> int:
    """fastText's `Dictionary::hash`: FNV-1a over bytes read as *signed* chars, as int32.

    A byte >= 0x80 is sign-extended before the xor (`uint32_t(int8_t(c))`); the result is
    returned as the signed int32 fastText stores in its `word_hashes` vector.
    """
    h = _FNV_OFFSET
    for byte in token:
        h ^= byte | 0xFFFFFF00 if byte > 127 else byte
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h - (1 << 32) if h >= (1 << 31) else h


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
        nxt[: len(extended) - shift] = extended[shift:]
        h = h * _NGRAM_MULTIPLIER + nxt
        out[valid, order - 2] = (h[valid] % np.uint64(bucket)).astype(np.int64)
    return out


@dataclass
class Dictionary:
    """Vocabulary, labels and n-gram settings; `encode` turns words into input-matrix rows."""

    words: List[bytes]
    word_counts: np.ndarray
    labels: List[bytes]
    label_counts: np.ndarray
    ntokens: int
    bucket: int
    word_ngrams: int

    def __post_init__(self):
        self._word_ids: Dict[bytes, int] = {w: i for i, w in enumerate(self.words)}
        self._label_ids: Dict[bytes, int] = {w: i for i, w in enumerate(self.labels)}
        self._hashes: Dict[bytes, int] = {}

    @property
    def nwords(self) -> int:
        return len(self.words)

    @property
    def nlabels(self) -> int:
        return len(self.labels)

    @property
    def num_input_rows(self) -> int:
        """Rows of the input (embedding) matrix: words then hash buckets."""
        return self.nwords + (self.bucket if self.word_ngrams > 1 else 0)

    @classmethod
    def build(cls, lines: Iterable[Sequence[bytes]], min_count: int = 1, min_count_label: int = 1,
              bucket: int = 2_000_000, word_ngrams: int = 1) -> "Dictionary":
        """Count the tokens of each line and threshold/sort them as `Dictionary::readFromFile`.

        Tokens are counted in file order: the order of first occurrence decides how
        libstdc++'s unstable sort places entries of equal count.
        """
        counts: Dict[bytes, int] = {}
        ntokens = 0
        for tokens in lines:
            for token in tokens:
                counts[token] = counts.get(token, 0) + 1
            ntokens += len(tokens)
        entries = list(counts.items())
        # Dictionary::threshold: std::sort by (type asc, count desc), then drop rare entries.
        kinds = [_LABEL if token.startswith(LABEL_PREFIX) else _WORD for token, _ in entries]
        max_count = max((c for _, c in entries), default=0) + 1
        order = cxx_sort_order([kind * max_count - c for kind, (_, c) in zip(kinds, entries)])
        words, word_counts, labels, label_counts = [], [], [], []
        for i in order:
            token, count = entries[i]
            if kinds[i] == _WORD and count >= min_count:
                words.append(token)
                word_counts.append(count)
            elif kinds[i] == _LABEL and count >= min_count_label:
                labels.append(token)
                label_counts.append(count)
        return cls(words, np.array(word_counts, dtype=np.int64), labels,
                   np.array(label_counts, dtype=np.int64), ntokens, bucket, word_ngrams)

    def word_id(self, word: bytes) -> int:
        return self._word_ids.get(word, -1)

    def label_id(self, label: bytes) -> int:
        return self._label_ids.get(label, -1)

    def _hash(self, word: bytes) -> int:
        h = self._hashes.get(word)
        if h is None:
            h = self._hashes[word] = hash_token(word)
        return h

    def encode_many(self, documents: Sequence[Sequence[bytes]]) -> Tuple[np.ndarray, np.ndarray]:
        """Input rows of many documents at once: (flat int64 ids, int64 offsets of len+1).

        Per document the order is fastText's `getLine`: in-vocabulary word ids in text order,
        then for each position its n-grams of order 2..word_ngrams. Like `getLine`, a
        document ends at its first EOS token, even a literal `</s>` inside the text.
        """
        word_ids, hashes, lengths = [], [], []
        for words in documents:
            if EOS in words:
                words = words[:list(words).index(EOS) + 1]
            lengths.append(len(words))
            for w in words:
                word_ids.append(self._word_ids.get(w, -1))
                hashes.append(self._hash(w))
        lengths = np.array(lengths, dtype=np.int64)
        word_ids = np.array(word_ids, dtype=np.int64)
        doc_of_word = np.repeat(np.arange(len(lengths)), lengths)
        known = word_ids >= 0
        parts_ids = [word_ids[known]]
        parts_doc = [doc_of_word[known]]
        if self.word_ngrams > 1 and len(word_ids):
            doc_ends = np.cumsum(lengths)[doc_of_word]
            buckets = word_ngram_buckets(np.array(hashes, dtype=np.int32), doc_ends, self.word_ngrams, self.bucket)
            valid = buckets >= 0
            parts_ids.append(buckets[valid] + self.nwords)
            parts_doc.append(np.broadcast_to(doc_of_word[:, None], buckets.shape)[valid])
        ids = np.concatenate(parts_ids)
        docs = np.concatenate(parts_doc)
        # Stable sort by document keeps words before n-grams, each in fastText's order.
        order = np.argsort(docs, kind="stable")
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.bincount(docs, minlength=len(lengths)), out=offsets[1:])
        return ids[order], offsets

    def encode(self, words: Sequence[bytes]) -> np.ndarray:
        """Input rows of one document (its words must end with EOS, as fastText's lines do)."""
        return self.encode_many([words])[0]

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """Pickle-free representation for checkpoints (see `from_arrays`)."""
        return {
            "dict_words": _pack_tokens(self.words),
            "dict_word_counts": self.word_counts,
            "dict_labels": _pack_tokens(self.labels),
            "dict_label_counts": self.label_counts,
            "dict_settings": np.array([self.ntokens, self.bucket, self.word_ngrams], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> "Dictionary":
        ntokens, bucket, word_ngrams = (int(v) for v in arrays["dict_settings"])
        return cls(_unpack_tokens(arrays["dict_words"]), arrays["dict_word_counts"],
                   _unpack_tokens(arrays["dict_labels"]), arrays["dict_label_counts"],
                   ntokens, bucket, word_ngrams)


def _pack_tokens(tokens: Sequence[bytes]) -> np.ndarray:
    """Tokens joined by newlines (no token contains whitespace) as a uint8 array."""
    return np.frombuffer(b"\n".join(tokens), dtype=np.uint8)


def _unpack_tokens(packed: np.ndarray) -> List[bytes]:
    data = packed.tobytes()
    return data.split(b"\n") if data else []
