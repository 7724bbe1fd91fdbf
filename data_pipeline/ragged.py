"""Ragged arrays as numpy likes them: one flat array of values plus row offsets.

Documents (their input rows, their labels) are stored this way in shards and batches, so
selecting many documents is two vectorised index operations, not a Python loop.
"""
import numpy as np


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """Offsets (len + 1, starting at 0) of rows with these lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def gather_rows(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray):
    """(concatenated values, lengths) of the given rows, in the given order."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    first_of_row = np.cumsum(lengths) - lengths
    positions = np.arange(lengths.sum()) + np.repeat(starts - first_of_row, lengths)
    return np.asarray(values[positions]), lengths
