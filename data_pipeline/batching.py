"""Mini-batches of whole documents as a bag matrix over the batch's unique rows.

A batch never touches the full input matrix: its documents' rows are remapped to the
sorted unique ids they use (`np.unique(..., return_inverse=True)`), and the bag mean is a
CSR matrix (documents x unique rows) whose entries sum to count / document length. The model
gathers just those rows, and the same (unique ids, row gradients) pair is what gets
updated and, under Horovod, exchanged. Each unique row also carries how many of the batch's
documents used it, which large-batch update rules normalise by (model/optimizers.py).
"""
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, Optional, Sequence

import numba
import numpy as np

from .ragged import gather_rows, offsets_of
from .shards import Shard


# Shard pages read are dropped from resident memory this often (see `Shard.release_pages`). A
# document's read maps not its one or two pages but up to 64 KB around them (the kernel's
# fault-around), so at most ~64 MB stay mapped; every 16,384 documents, the prefetching
# process held 698 MB of shard pages at Yelp's size.
DOCS_BETWEEN_PAGE_RELEASES = 1024


class PageReleases:
    """Drops the pages of `shards` read so far from resident memory once every
    `DOCS_BETWEEN_PAGE_RELEASES` documents read from them (see `Shard.release_pages`)."""

    def __init__(self, shards: Iterable):
        self.shards = list(shards)
        self.docs_since_release = 0

    def read(self, num_docs: int):
        self.docs_since_release += num_docs
        if self.docs_since_release >= DOCS_BETWEEN_PAGE_RELEASES:  # resident shard pages stay bounded
            self.release()

    def release(self):
        for shard in self.shards:
            shard.release_pages()
        self.docs_since_release = 0


@dataclass
class Batch:
    unique_ids: np.ndarray     # (U,) int64, sorted input-matrix rows used by the batch
    bag_data: np.ndarray       # CSR values: occurrences / document length, float32
    bag_indices: np.ndarray    # CSR column indices into unique_ids, int64
    bag_indptr: np.ndarray     # CSR row pointers, int64, len = num_docs + 1
    targets: np.ndarray        # int32: (num_docs,) label id trained on, or (num_docs, width) label sets
    num_tokens: int            # fastText tokens in these documents (drives lr decay)
    row_doc_counts: np.ndarray  # (U,) int64, documents using each unique row (a repeat in one counts once)

    @property
    def num_docs(self) -> int:
        return len(self.targets)


def label_matrix(label_ids: np.ndarray, lengths: np.ndarray, width: Optional[int] = None) -> np.ndarray:
    """Ragged label sets (concatenated ids, set sizes) as a (sets, width) int32 matrix padded with -1.

    A rectangle lets a device turn a batch's label sets into a multi-hot matrix in one op.
    `width` defaults to the largest set; it is at least 1, so an empty batch has a column.
    """
    width = max(1, int(lengths.max(initial=0)) if width is None else width)
    matrix = np.full((len(lengths), width), -1, dtype=np.int32)
    set_of = np.repeat(np.arange(len(lengths)), lengths)
    matrix[set_of, np.arange(len(label_ids)) - offsets_of(lengths)[set_of]] = label_ids
    return matrix


def make_batch(rows: np.ndarray, lengths: np.ndarray, targets: np.ndarray, num_tokens: int) -> Batch:
    """The bag matrix of documents given as their concatenated input rows and lengths.

    A row a document uses k times appears k times in its CSR row, each with weight
    1/length: MXNet's CSR dot sums duplicates, so no second sort is needed to merge them.
    """
    indptr = offsets_of(lengths)
    if not len(rows):
        return Batch(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64),
                     indptr, targets.astype(np.int32), int(num_tokens), np.zeros(0, dtype=np.int64))
    unique_ids, columns, doc_counts = unique_rows_and_document_counts(rows, lengths)
    return Batch(unique_ids, bag_weights(lengths), columns, indptr, targets.astype(np.int32), int(num_tokens),
                 doc_counts)


def bag_weights(lengths: np.ndarray) -> np.ndarray:
    """Each entry of a document's bag row: 1 / its length (float32), its rows summing to their mean."""
    return np.repeat((1.0 / np.maximum(lengths, 1)).astype(np.float32), lengths)


def unique_rows_and_document_counts(rows: np.ndarray, lengths: np.ndarray):
    """(sorted unique rows, each row's index among them, per unique row the documents using it).

    `np.unique(rows, return_inverse=True)` done by hand with a *stable* sort: equal rows then
    stay in document order, so counting documents rather than occurrences is one comparison
    of neighbours, not a second sort of (document, row) pairs. The sort is a compiled radix
    sort: numpy's stable sort of int32 keys is a timsort, 19 of the 21 ms a batch of 1,024
    Debian documents (160k rows) took to assemble.
    """
    return _unique_rows_and_document_counts(rows, lengths)


_RADIX_BITS = 12  # two passes for the rows of a 10M-bucket table (< 2^24); 4,096 counts stay in L1


@numba.njit(cache=True, nogil=True)
def _unique_rows_and_document_counts(rows, lengths):
    order = _stable_radix_order(rows)
    document = np.empty(len(rows), np.int64)
    position = 0
    for doc in range(len(lengths)):
        document[position:position + lengths[doc]] = doc
        position += lengths[doc]
    unique = np.empty(len(rows), np.int64)
    doc_counts = np.zeros(len(rows), np.int64)
    columns = np.empty(len(rows), np.int64)
    column, last_doc = -1, -1
    for i in range(len(rows)):
        token = order[i]
        if column < 0 or rows[token] != unique[column]:
            column += 1
            unique[column] = rows[token]
            last_doc = -1
        columns[token] = column
        if document[token] != last_doc:  # a row's tokens come in document order: a repeat is adjacent
            doc_counts[column] += 1
            last_doc = document[token]
    return unique[:column + 1].copy(), columns, doc_counts[:column + 1].copy()


@numba.njit(cache=True, nogil=True)
def _stable_radix_order(keys):
    """The stable sort order of non-negative integer keys: least significant digit first,
    each pass moving (key, position) pairs so that every read is sequential. Keys keep their
    dtype and positions are int32 (a batch has fewer than 2^31 tokens): half the bytes each
    pass moves. With the two passes: 6.0 -> 2.6 ms for a batch of 1,024 Debian documents."""
    order = np.arange(len(keys)).astype(np.int32)
    if len(keys) < 2:
        return order
    digit_mask, largest = (1 << _RADIX_BITS) - 1, keys.max()
    sorted_keys = keys.copy()
    next_keys, next_order = np.empty_like(sorted_keys), np.empty_like(order)
    starts = np.empty(1 << _RADIX_BITS, np.int64)
    shift = 0
    while shift == 0 or largest >> shift:
        starts[:] = 0
        for key in sorted_keys:
            starts[(key >> shift) & digit_mask] += 1
        total = 0
        for digit in range(1 << _RADIX_BITS):
            total, starts[digit] = total + starts[digit], total
        for i in range(len(order)):
            digit = (sorted_keys[i] >> shift) & digit_mask
            next_keys[starts[digit]], next_order[starts[digit]] = sorted_keys[i], order[i]
            starts[digit] += 1
        sorted_keys, next_keys, order, next_order = next_keys, sorted_keys, next_order, order
        shift += _RADIX_BITS
    return order


class BatchStream:
    """This process's part of every global mini-batch of an epoch.

    Shards hold documents round-robin (document i of the corpus is document i // S of
    shard i % S), so an epoch's global order is that same interleaving with each shard's
    documents permuted: position i is document perm[i % S][i // S]. Global batch j is
    positions [j*G, (j+1)*G), and a process keeps the positions of the shards it owns.
    A process owning all shards therefore sees exactly the union of what ranks owning a
    partition of them see: batches depend on the global batch size G, never on the number
    of ranks; every document is seen once per epoch; every rank runs the same number of
    steps (its share of a step may be empty when G is small). Randomness is counter-based
    (seed, epoch, shard), so a run resumed at batch j continues with the same batches.

    `keep_rows` (a boolean mask over input rows) trains as fastText does after pruning its
    dictionary: other rows leave the documents, and a document left with none is skipped.

    Targets are one label per document, drawn uniformly from its set as fastText's softmax
    and hs do, or with `all_labels` its whole set (`label_matrix`), as fastText's ova does.
    """

    def __init__(self, shards: Dict[int, Shard], docs_per_shard: Sequence[int], global_batch_size: int, seed: int,
                 keep_rows: Optional[np.ndarray] = None, all_labels: bool = False):
        self.shards = shards
        self.keep_rows = keep_rows
        self.all_labels = all_labels
        # One width for every part of every batch, so shards' label matrices concatenate.
        self.label_width = max((int(np.diff(shard.label_offsets).max(initial=0)) for shard in shards.values()),
                               default=1)
        self.num_shards = len(docs_per_shard)
        self.num_docs = sum(docs_per_shard)
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.steps_per_epoch = max(1, -(-self.num_docs // global_batch_size))
        self._owned = np.zeros(self.num_shards, dtype=bool)
        self._owned[list(shards)] = True

    def largest_batch_bytes(self) -> int:
        """A bound on the bytes of one batch's arrays here: its share of a global batch holds at
        most the longest documents of this process's shards, each entry a CSR value and column
        and at most one unique row with its document count."""
        lengths = np.concatenate([np.diff(shard.offsets) for shard in self.shards.values()] or [np.zeros(0, np.int64)])
        docs = min(self.global_batch_size, len(lengths))
        entries = int(np.partition(lengths, len(lengths) - docs)[len(lengths) - docs:].sum()) if docs else 0
        label_width = self.label_width if self.all_labels else 1
        return (4 + 8 + 8 + 8) * entries + 8 * (docs + 1) + 4 * docs * label_width

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches `start_batch`.. of one epoch (possibly empty ones, see the class doc)."""
        orders, label_picks = {}, {}
        for s, shard in self.shards.items():
            rng = np.random.default_rng([self.seed, epoch, s])
            orders[s] = rng.permutation(shard.num_docs)
            label_picks[s] = rng.random(shard.num_docs)
        pages = PageReleases(self.shards.values())
        for j in range(start_batch, self.steps_per_epoch):
            positions = np.arange(j * self.global_batch_size, min((j + 1) * self.global_batch_size, self.num_docs))
            parts = [self._shard_part(s, orders[s], label_picks[s], positions[positions % self.num_shards == s]
                                      // self.num_shards) for s in self.shards]
            rows, lengths, targets, tokens = (np.concatenate(column) for column in zip(*parts))
            pages.read(len(positions))
            yield make_batch(rows, lengths, targets, int(tokens.sum()))

    def _shard_part(self, s: int, order: np.ndarray, label_picks: np.ndarray, ks: np.ndarray):
        """Rows, lengths, targets and token counts of shard s's documents at permuted places ks."""
        shard, docs = self.shards[s], order[ks]
        num_tokens = shard.num_tokens[docs]  # a skipped document's tokens still count, as in fastText
        rows, lengths = gather_rows(shard.ids, shard.offsets, docs)
        if self.keep_rows is not None:
            kept = self.keep_rows[rows]
            rows, lengths = rows[kept], np.bincount(np.repeat(np.arange(len(docs)), lengths)[kept],
                                                    minlength=len(docs))
            docs, ks = docs[lengths > 0], ks[lengths > 0]
            lengths = lengths[lengths > 0]
        if self.all_labels:
            targets = label_matrix(*gather_rows(shard.label_ids, shard.label_offsets, docs), self.label_width)
        else:
            first_label = shard.label_offsets[docs]
            num_labels = shard.label_offsets[docs + 1] - first_label
            # fastText's softmax trains on one label of a multi-label line, drawn uniformly.
            targets = shard.label_ids[first_label + (label_picks[ks] * num_labels).astype(np.int64)]
        return rows, lengths, targets, num_tokens
