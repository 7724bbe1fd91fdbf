"""Pretrained word vectors in the `.vec` text format of fastText and word2vec.

The first line is `<count> <dim>`; each of the next `count` lines is a word followed by
`dim` numbers, separated by spaces. fastText's `loadVectors` reads exactly `count`
entries, so a file with fewer is as much an error as a malformed line.
"""
import os
from dataclasses import dataclass, replace
from typing import List, Sequence

import numpy as np

from .dictionary import Dictionary
from .errors import InputError
from .readers import check_readable_file


@dataclass
class WordVectors:
    words: List[bytes]
    vectors: np.ndarray  # (len(words), dim) float32

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def _header(path: str, line: bytes):
    fields = line.split()
    if len(fields) != 2 or not all(f.isdigit() for f in fields) or int(fields[1]) < 1:
        raise InputError(path, f"expected a header `<count> <dim>`, got {line[:60]!r}", 1)
    return int(fields[0]), int(fields[1])


def read_vectors(path: str, expected_dim: int) -> WordVectors:
    """The words and vectors of a `.vec` file whose dimension must be `expected_dim`."""
    check_readable_file(path)
    with open(path, "rb") as handle:
        first = handle.readline()
        if not first.strip():
            raise InputError(path, "empty file: expected a header `<count> <dim>`", 1)
        count, dim = _header(path, first)
        if dim != expected_dim:
            raise InputError(path, f"vectors have dimension {dim}, but the model's --dim is {expected_dim}", 1)
        # Each entry takes at least a one-byte word and `dim` one-digit numbers, each after a
        # space: a header promising more than the file can hold is refused before allocating.
        available = os.fstat(handle.fileno()).st_size - len(first)
        if count * (2 * dim + 1) > available:
            raise InputError(path, f"the header promises {count:,} vectors of dimension {dim}, more than the "
                                   f"{available:,} bytes after it can hold", 1)
        words: List[bytes] = []
        vectors = np.empty((count, dim), dtype=np.float32)
        for number, line in enumerate(handle, start=2):
            if len(words) == count:
                break
            fields = line.split()
            if not fields:
                continue
            if len(fields) != dim + 1:
                raise InputError(path, f"expected a word and {dim} numbers, got {len(fields)} fields", number)
            try:
                vectors[len(words)] = np.array(fields[1:], dtype=np.float32)
            except ValueError:
                raise InputError(path, "a vector component is not a number", number) from None
            if not np.isfinite(vectors[len(words)]).all():
                raise InputError(path, "a vector component is not finite", number)
            words.append(fields[0])
    if len(words) < count:
        raise InputError(path, f"the header promises {count} vectors, the file has {len(words)}")
    return WordVectors(words, vectors)


def add_pretrained_words(dictionary: Dictionary, words: Sequence[bytes]) -> Dictionary:
    """The vocabulary after fastText's `getInputMatrixFromFile` has read pretrained vectors.

    fastText `add`s every word of the file to the thresholded dictionary (one more
    occurrence of a known word, a new entry of count 1 otherwise, one more token either
    way) and thresholds again with min count 1, so words of the file that training never
    saw get ids too, and their pretrained vectors serve at prediction time.
    """
    counts = dict(zip(dictionary.words, dictionary.word_counts.tolist()))
    counts.update(zip(dictionary.labels, dictionary.label_counts.tolist()))
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    tokens = list(counts)
    merged = Dictionary.from_counts(tokens, np.fromiter(counts.values(), dtype=np.int64, count=len(tokens)),
                                    1, 0, dictionary.bucket, dictionary.word_ngrams)
    return replace(merged, ntokens=dictionary.ntokens + len(words))
