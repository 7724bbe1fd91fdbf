"""Mini-batches of whole documents as a bag matrix over the batch's unique rows.

A batch never touches the full input matrix: its documents' rows are remapped to the
sorted unique ids they use (`np.unique(..., return_inverse=True)`), and the bag mean is a
CSR matrix (documents x unique rows) whose entries are count / document length. The model
gathers just those rows, and the same (unique ids, row gradients) pair is what gets
updated and, under Horovod, exchanged.
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence

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
    """Assemble the bag matrix for documents given as arrays of input rows."""
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


def shard_batch_sizes(global_batch_size: int, num_shards: int) -> List[int]:
    """How many documents each shard contributes to every global batch."""
    base, extra = divmod(global_batch_size, num_shards)
    return [base + (1 if s < extra else 0) for s in range(num_shards)]


class BatchStream:
    """The slice of every global mini-batch that comes from some of the shards.

    Global batch j takes, from each shard s, the next `shard_batch_sizes[s]` documents of
    that shard's own permutation for the epoch. A process owning all shards therefore
    sees exactly the union of what ranks owning a partition of them see: the global
    batches do not depend on the number of ranks, only on the global batch size, and
    every rank runs the same number of steps. Randomness is counter-based (seed, epoch,
    shard), so a run resumed at batch j continues with exactly the batches it would have
    seen. A shard that runs out before the epoch's last step wraps around.
    """

    def __init__(self, shards: Dict[int, Shard], docs_per_shard: Sequence[int], global_batch_size: int, seed: int):
        self.shards = shards
        self.seed = seed
        self.per_shard = shard_batch_sizes(global_batch_size, len(docs_per_shard))
        self.steps_per_epoch = max(1, -(-sum(docs_per_shard) // global_batch_size))

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches `start_batch`.. of one epoch, as this process's share of each global batch."""
        plans = []
        for s, shard in self.shards.items():
            if shard.num_docs and self.per_shard[s]:
                rng = np.random.default_rng([self.seed, epoch, s])
                plans.append((shard, rng.permutation(shard.num_docs), rng.random(shard.num_docs), self.per_shard[s]))
        for j in range(start_batch, self.steps_per_epoch):
            doc_rows, targets, num_tokens = [], [], 0
            for shard, order, label_picks, size in plans:
                for position in range(j * size, (j + 1) * size):
                    d = order[position % shard.num_docs]
                    doc_rows.append(shard.doc_ids(d))
                    labels = shard.doc_labels(d)
                    # fastText's softmax trains on one label of a multi-label line, drawn uniformly.
                    targets.append(labels[int(label_picks[position % shard.num_docs] * len(labels))])
                    num_tokens += int(shard.num_tokens[d])
            if doc_rows:
                yield make_batch(doc_rows, np.array(targets), num_tokens)
