"""Mini-batches of whole documents as a bag matrix over the batch's unique rows.

A batch never touches the full input matrix: its documents' rows are remapped to the
sorted unique ids they use (`np.unique(..., return_inverse=True)`), and the bag mean is a
CSR matrix (documents x unique rows) whose entries are count / document length. The model
gathers just those rows, and the same (unique ids, row gradients) pair is what gets
updated and, under Horovod, exchanged.
"""
from dataclasses import dataclass
from typing import Dict, Iterator, Sequence

import numpy as np

from .shards import Shard


@dataclass
class Batch:
    unique_ids: np.ndarray     # (U,) int64, sorted input-matrix rows used by the batch
    bag_data: np.ndarray       # CSR values: occurrences / document length, float32
    bag_indices: np.ndarray    # CSR column indices into unique_ids, int64
    bag_indptr: np.ndarray     # CSR row pointers, int64, len = num_docs + 1
    targets: np.ndarray        # (num_docs,) int32 label id trained on for each document
    num_tokens: int            # fastText tokens in these documents (drives lr decay)

    @property
    def num_docs(self) -> int:
        return len(self.targets)


def make_batch(doc_rows: Sequence[np.ndarray], targets: np.ndarray, num_tokens: int) -> Batch:
    """Assemble the bag matrix for documents given as arrays of input rows (maybe none)."""
    if not doc_rows:
        empty = np.zeros(0, dtype=np.int64)
        return Batch(empty, np.zeros(0, dtype=np.float32), empty, np.zeros(1, dtype=np.int64),
                     np.zeros(0, dtype=np.int32), 0)
    lengths = np.array([len(r) for r in doc_rows], dtype=np.int64)
    rows = np.concatenate(doc_rows).astype(np.int64)
    unique_ids, columns = np.unique(rows, return_inverse=True)
    doc_of_row = np.repeat(np.arange(len(doc_rows), dtype=np.int64), lengths)
    # One CSR entry per (document, row): a repeated row adds its weight once per occurrence.
    cells, counts = np.unique(doc_of_row * len(unique_ids) + columns, return_counts=True)
    cell_docs = cells // len(unique_ids)
    indptr = np.zeros(len(doc_rows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell_docs, minlength=len(doc_rows)), out=indptr[1:])
    data = (counts / lengths[cell_docs]).astype(np.float32)
    return Batch(unique_ids, data, cells % len(unique_ids), indptr, targets.astype(np.int32), int(num_tokens))


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
    """

    def __init__(self, shards: Dict[int, Shard], docs_per_shard: Sequence[int], global_batch_size: int, seed: int):
        self.shards = shards
        self.num_shards = len(docs_per_shard)
        self.num_docs = sum(docs_per_shard)
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.steps_per_epoch = max(1, -(-self.num_docs // global_batch_size))
        self._owned = np.zeros(self.num_shards, dtype=bool)
        self._owned[list(shards)] = True

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches `start_batch`.. of one epoch (possibly empty ones, see the class doc)."""
        orders, label_picks = {}, {}
        for s, shard in self.shards.items():
            rng = np.random.default_rng([self.seed, epoch, s])
            orders[s] = rng.permutation(shard.num_docs)
            label_picks[s] = rng.random(shard.num_docs)
        for j in range(start_batch, self.steps_per_epoch):
            positions = np.arange(j * self.global_batch_size, min((j + 1) * self.global_batch_size, self.num_docs))
            positions = positions[self._owned[positions % self.num_shards]]
            doc_rows, targets, num_tokens = [], [], 0
            for s, k in zip(positions % self.num_shards, positions // self.num_shards):
                shard, d = self.shards[s], orders[s][k]
                doc_rows.append(shard.doc_ids(d))
                labels = shard.doc_labels(d)
                # fastText's softmax trains on one label of a multi-label line, drawn uniformly.
                targets.append(labels[int(label_picks[s][k] * len(labels))])
                num_tokens += int(shard.num_tokens[d])
            yield make_batch(doc_rows, np.array(targets, dtype=np.int32), num_tokens)
