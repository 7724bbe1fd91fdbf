"""`Dictionary.encode_positions` as one compiled pass, for preprocessing's pass 2.

The numpy version builds a dozen arrays of the corpus's size and sorts them back into
line order (~300 ns a token); this kernel walks each line once, as fastText's `getLine`
and `addWordNgrams` do, and writes the rows in their final order. It lives apart from
`dictionary.py` because numba's import costs a second that prediction and serving must
not pay; `Dictionary.encode_positions` stays the reference it is tested against.
"""
import numba
import numpy as np

from .dictionary import Dictionary, EncodedLines, TokenTable
from .ragged import offsets_of

_NGRAM_MULTIPLIER = np.uint64(116049371)


def encode_positions(dictionary: Dictionary, positions: np.ndarray, lengths: np.ndarray,
                     table: TokenTable) -> EncodedLines:
    """What `dictionary.encode_positions(positions, lengths, table)` returns, the same arrays."""
    pruned = dictionary.is_pruned
    kept_buckets = dictionary._kept_buckets if pruned else np.zeros(0, dtype=np.int64)
    kept_rows = dictionary._kept_rows if pruned else np.zeros(0, dtype=np.int64)
    ids, row_counts, label_ids, label_counts, num_tokens = _encode(
        positions, lengths.astype(np.int64), table.word_ids, table.label_ids, table.is_label, table.hashes,
        table.eos, dictionary.nwords, dictionary.bucket, dictionary.word_ngrams, pruned,
        np.ascontiguousarray(kept_buckets), np.ascontiguousarray(kept_rows))
    return EncodedLines(ids, offsets_of(row_counts), label_ids, offsets_of(label_counts), num_tokens)


@numba.njit(cache=True)
def _encode(positions, lengths, word_ids, label_ids, is_label, hashes, eos, nwords, bucket, word_ngrams, pruned,
            kept_buckets, kept_rows):
    num_lines = len(lengths)
    ngram_orders = max(word_ngrams - 1, 0)
    ids = np.empty(len(positions) * (1 + ngram_orders), dtype=np.int64)
    row_counts = np.zeros(num_lines, dtype=np.int64)
    labels = np.empty(len(positions), dtype=np.int64)
    label_counts = np.zeros(num_lines, dtype=np.int64)
    num_tokens = np.zeros(num_lines, dtype=np.int64)
    line_hashes = np.empty(max(int(lengths.max()) if num_lines else 0, 1), dtype=np.uint64)
    num_ids = 0
    num_labels = 0
    start = 0
    big_bucket = np.uint64(max(bucket, 1))
    for line in range(num_lines):
        first_id = num_ids
        first_label = num_labels
        num_words = 0
        read = 0
        for k in range(start, start + lengths[line]):
            p = positions[k]
            read += 1
            if is_label[p]:
                if label_ids[p] >= 0:
                    labels[num_labels] = label_ids[p]
                    num_labels += 1
            else:
                if word_ids[p] >= 0:
                    ids[num_ids] = word_ids[p]
                    num_ids += 1
                # `uint64_t h = hashes[i]` sign-extends the int32 hash (fastText's addWordNgrams).
                line_hashes[num_words] = np.uint64(np.int64(hashes[p]))
                num_words += 1
            if p == eos:  # getLine stops at the first EOS, even a literal `</s>` in the text
                break
        for i in range(num_words if ngram_orders else 0):
            h = line_hashes[i]
            for j in range(i + 1, min(num_words, i + word_ngrams)):
                h = h * _NGRAM_MULTIPLIER + line_hashes[j]
                ngram_bucket = np.int64(h % big_bucket)
                if not pruned:
                    ids[num_ids] = nwords + ngram_bucket
                    num_ids += 1
                elif len(kept_buckets):  # pushHash drops a bucket pruning did not keep
                    at = min(np.searchsorted(kept_buckets, ngram_bucket), len(kept_buckets) - 1)
                    if kept_buckets[at] == ngram_bucket:
                        ids[num_ids] = nwords + kept_rows[at]
                        num_ids += 1
        row_counts[line] = num_ids - first_id
        label_counts[line] = num_labels - first_label
        num_tokens[line] = read
        start += lengths[line]
    return ids[:num_ids].copy(), row_counts, labels[:num_labels].copy(), label_counts, num_tokens


def _load_kernel():
    """Load the kernel now, before pass 2's workers fork (see `distinct_tokens`): one line of one word."""
    one, ids = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    _encode(np.zeros(1, dtype=np.int32), np.ones(1, dtype=np.int64), ids, ids, np.zeros(1, dtype=np.bool_),
            np.zeros(1, dtype=np.int32), 0, 1, 10, 2, False, one, one)


_load_kernel()
