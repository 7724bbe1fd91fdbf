"""Synthetic corpora of the paper datasets' sizes, for measuring throughput at full scale.

This is not real text, and it says so wherever it goes: it is written under a data root whose
name contains "synthetic", with a `SYNTHETIC.txt` marker beside `train.csv`, and its classes
are named "synthetic class k". The layout is Zhang et al.'s CSV with the real dataset's
number of text columns, so `train.py --dataset NAME --data-root <that root>` trains on it.

What it shares with the real corpus:

* document counts: the real train/test sizes (times `scale`);
* lengths: log-normal fastText tokens per document around the real corpus' mean. AG News is
  calibrated on the bundled real rows (mean 47 tokens, log-sd 0.25); the other means are
  rough estimates, since the full corpora cannot be reached from here to measure them;
* words: Zipf-Mandelbrot frequencies, p(rank) ~ 1 / (rank + 2.7)^1.1 over 2^21 word types,
  so the vocabulary grows with the corpus roughly as a real one does;
* labels are learnable: each class has 1,000 topic words that replace a background word at
  8% of positions, and the written label is another class for a share of documents chosen
  so that the best achievable accuracy is the paper's bigram accuracy for that dataset.

Everything is numpy-vectorised per chunk of documents: Yelp polarity's 598,000 documents
(370 MB of CSV) take about 20 seconds on one core.
"""
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .datasets import DatasetSpec
from .errors import InputError

SYNTHETIC_MARKER = "SYNTHETIC.txt"
_VOCABULARY = 1 << 21
_ZIPF_EXPONENT = 1.1
_ZIPF_OFFSET = 2.7
_TOPIC_WORDS = 1000
_TOPIC_SHARE = 0.08
_TITLE_WORDS = 6.5
_CHUNK_DOCS = 50_000


@dataclass(frozen=True)
class LengthModel:
    mean_tokens: float   # fastText tokens per document: label, words, column commas, </s>
    log_sd: float


LENGTHS = {
    "ag_news": LengthModel(47, 0.25),
    "sogou_news": LengthModel(600, 0.6),
    "dbpedia": LengthModel(58, 0.35),
    "yelp_polarity": LengthModel(175, 0.75),
    "yelp_full": LengthModel(175, 0.75),
    "yahoo_answers": LengthModel(120, 0.8),
    "amazon_full": LengthModel(95, 0.45),
    "amazon_polarity": LengthModel(95, 0.45),
}


def is_synthetic(dataset_dir: str) -> bool:
    return os.path.isfile(os.path.join(dataset_dir, SYNTHETIC_MARKER))


def _word_table(size: int):
    """Words for ranks 0..size-1 as bijective base-26 letters (a..z, aa..zz, ...: frequent ranks
    are short), each twice: rows [0, size) end in a space, rows [size, 2 size) do not.
    Returns (flat uint8 buffer, start of each row, length of each row)."""
    spaced, bare, lengths = [], [], []
    first, letters = 0, 1
    while first < size:
        count = min(26 ** letters, size - first)
        value = np.arange(count, dtype=np.int64)[:, None] // 26 ** np.arange(letters - 1, -1, -1)[None, :]
        word = (ord("a") + value % 26).astype(np.uint8)
        spaced.append(np.concatenate([word, np.full((count, 1), ord(" "), dtype=np.uint8)], axis=1).ravel())
        bare.append(word.ravel())
        lengths.append(np.full(count, letters, dtype=np.int64))
        first += count
        letters += 1
    lengths = np.concatenate(lengths)
    lengths = np.concatenate([lengths + 1, lengths])
    buffer = np.concatenate(spaced + bare)
    return buffer, np.cumsum(lengths) - lengths, lengths


class _Generator:
    """Documents of one dataset as CSV bytes, chunk by chunk."""

    def __init__(self, spec: DatasetSpec, seed: int):
        self.spec = spec
        self.lengths = LENGTHS[spec.name]
        self.noise = 1.0 - spec.paper_accuracy[1] / 100.0
        self.words, word_starts, word_lengths = _word_table(_VOCABULARY)
        classes = spec.num_classes
        # Special items after the 2 x V word rows: `"k","` per class, `","`, `"\n`.
        specials = [f'"{k}","'.encode() for k in range(1, classes + 1)] + [b'","', b'"\n']
        special_bytes = np.frombuffer(b"".join(specials), dtype=np.uint8)
        special_lengths = np.array([len(s) for s in specials], dtype=np.int64)
        self.buffer = np.concatenate([self.words, special_bytes])
        self.starts = np.concatenate([word_starts, len(self.words) + np.cumsum(special_lengths) - special_lengths])
        self.item_lengths = np.concatenate([word_lengths, special_lengths])
        self.separator = 2 * _VOCABULARY + classes
        self.line_end = self.separator + 1
        rng = np.random.default_rng([seed, 0])
        # Topic words: mid-frequency ranks, a different random set for each class.
        self.topics = rng.choice(np.arange(100, 100_000), size=(classes, _TOPIC_WORDS))

    @staticmethod
    def _zipf_ranks(rng, n: int, size: int) -> np.ndarray:
        """Ranks from the continuous Zipf-Mandelbrot inverse CDF, vectorised."""
        a = 1.0 - _ZIPF_EXPONENT
        low, high = _ZIPF_OFFSET ** a, (size + _ZIPF_OFFSET) ** a
        ranks = (low + rng.random(n) * (high - low)) ** (1.0 / a) - _ZIPF_OFFSET
        return np.minimum(ranks.astype(np.int64), size - 1)

    def _column_lengths(self, rng, words: np.ndarray) -> np.ndarray:
        """(documents, text columns) word counts: a short title, the rest split evenly."""
        columns = self.spec.text_columns
        if columns == 1:
            return words[:, None]
        title = np.clip(np.rint(rng.lognormal(np.log(_TITLE_WORDS), 0.35, len(words))), 1, words - (columns - 1))
        rest = words - title.astype(np.int64)
        share = np.stack([rest // (columns - 1) + (rest % (columns - 1) > c) for c in range(columns - 1)], axis=1)
        return np.concatenate([title.astype(np.int64)[:, None], share], axis=1)

    def chunk(self, rng, n: int) -> bytes:
        columns, classes = self.spec.text_columns, self.spec.num_classes
        true_class = rng.integers(0, classes, n)
        flipped = rng.random(n) < self.noise
        label = np.where(flipped, (true_class + rng.integers(1, classes, n)) % classes, true_class)
        # Tokens besides words: label, one comma between columns, </s>.
        other_tokens = 2 + (columns - 1)
        mu = np.log(self.lengths.mean_tokens) - self.lengths.log_sd ** 2 / 2
        tokens = np.rint(rng.lognormal(mu, self.lengths.log_sd, n)).astype(np.int64)
        words = np.maximum(tokens - other_tokens, columns)
        column_words = self._column_lengths(rng, words)
        word_ids = self._zipf_ranks(rng, int(words.sum()), _VOCABULARY)
        topical = rng.random(len(word_ids)) < _TOPIC_SHARE
        topic_rank = self._zipf_ranks(rng, int(topical.sum()), _TOPIC_WORDS)
        word_ids[topical] = self.topics[np.repeat(true_class, words)[topical], topic_rank]
        # Items per document: label, words with a separator after each column, line end.
        items = words + columns + 1
        doc_start = np.concatenate([[0], np.cumsum(items)[:-1]])
        column_end = doc_start[:, None] + 1 + np.cumsum(column_words, axis=1) + np.arange(columns)[None, :]
        stream = np.empty(int(items.sum()), dtype=np.int64)
        special = np.zeros(len(stream), dtype=bool)
        special[doc_start] = True
        special[column_end.ravel()] = True
        stream[~special] = word_ids
        stream[doc_start] = 2 * _VOCABULARY + label
        stream[column_end[:, :-1].ravel()] = self.separator
        stream[column_end[:, -1]] = self.line_end
        stream[column_end.ravel() - 1] += _VOCABULARY  # a column's last word has no trailing space
        lengths = self.item_lengths[stream]
        out_start = np.cumsum(lengths) - lengths
        gather = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(out_start - self.starts[stream], lengths)
        return self.buffer[gather].tobytes()


def _marker_text(spec: DatasetSpec, scale: float, seed: int, counts) -> str:
    lengths = LENGTHS[spec.name]
    return (f"SYNTHETIC DATA - not {spec.name}, not real text.\n"
            f"Generated by data_pipeline/synthetic.py to measure throughput at the real corpus' size.\n"
            f"dataset shape: {spec.name}; scale {scale}; seed {seed}; "
            f"train {counts[0]:,} / test {counts[1]:,} documents\n"
            f"length: log-normal, mean {lengths.mean_tokens} fastText tokens, log-sd {lengths.log_sd}\n"
            f"words: Zipf-Mandelbrot, exponent {_ZIPF_EXPONENT}, offset {_ZIPF_OFFSET}, {_VOCABULARY:,} types\n"
            f"labels: {_TOPIC_WORDS} topic words per class at {_TOPIC_SHARE:.0%} of positions; "
            f"label noise {1 - spec.paper_accuracy[1] / 100:.3f} (best accuracy about {spec.paper_accuracy[1]}%)\n")


def synthetic_counts(spec: DatasetSpec, scale: float):
    """(train, test) documents at `scale` of the real dataset, at least one each."""
    return max(1, round(spec.train_rows * scale)), max(1, round(spec.test_rows * scale))


def write_synthetic_dataset(spec: DatasetSpec, data_root: str, scale: float = 1.0, seed: int = 0,
                            on_progress: Optional[Callable[[int], None]] = None) -> str:
    """Write `data_root/<directory>/{train,test}.csv, classes.txt, SYNTHETIC.txt`; returns the directory.

    `scale` multiplies the real document counts (at least one document each).
    """
    if "synthetic" not in os.path.basename(os.path.abspath(data_root)).lower():
        raise InputError(data_root, "a synthetic corpus goes under a data root whose name says 'synthetic' "
                                    "(e.g. data_synthetic), so it is never taken for the real one")
    if not 0 < scale <= 1:
        raise InputError(data_root, f"--scale must be in (0, 1], got {scale}")
    final = spec.dataset_dir(data_root)
    if os.path.exists(final):
        raise InputError(final, "exists; remove it to generate again")
    counts = synthetic_counts(spec, scale)
    generator = _Generator(spec, seed)
    os.makedirs(data_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".synthesizing-{spec.name}-", dir=data_root)
    try:
        for split, (name, count) in enumerate(zip(("train.csv", "test.csv"), counts), start=1):
            rng = np.random.default_rng([seed, split])
            with open(os.path.join(staging, name), "wb") as out:
                for start in range(0, count, _CHUNK_DOCS):
                    n = min(_CHUNK_DOCS, count - start)
                    out.write(generator.chunk(rng, n))
                    if on_progress:
                        on_progress(n)
        with open(os.path.join(staging, "classes.txt"), "w", encoding="utf-8") as out:
            out.writelines(f"synthetic class {k}\n" for k in range(1, spec.num_classes + 1))
        with open(os.path.join(staging, SYNTHETIC_MARKER), "w", encoding="utf-8") as out:
            out.write(_marker_text(spec, scale, seed, counts))
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
