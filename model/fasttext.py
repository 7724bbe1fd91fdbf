"""The fastText classifier as a Gluon block: bag of input rows -> mean -> output layer -> loss.

The input matrix (`nwords + bucket` rows) is never differentiated as a whole: a step
gathers only the rows its batch uses (`gather_rows`), the block differentiates that small
dense block, and `sgd.sparse_sgd_step` writes the result back lazily. Both matrices are
initialised as fastText does: input uniform in +-1/dim, output zero.
"""
from typing import Dict

import mxnet as mx
import numpy as np
from mxnet import gluon

from .hierarchical_softmax import HuffmanTree, hs_loss, hs_top_k

LOSSES = ("softmax", "hs")


class SeededUniform(mx.init.Initializer):
    """fastText's input init, uniform in +-scale, drawn on the CPU from a seed.

    MXNet's CPU sampler gives the same numbers for a seed whatever the thread count or
    the device the matrix lives on, so a checkpoint need not store untouched rows: they
    are regenerated from the seed (see `state_arrays`).
    """

    def __init__(self, scale: float, seed: int):
        super().__init__(scale=scale, seed=seed)
        self.scale = scale
        self.seed = seed

    def _init_weight(self, name, arr):
        mx.random.seed(self.seed, ctx=mx.cpu())
        mx.nd.random.uniform(-self.scale, self.scale, shape=arr.shape, ctx=mx.cpu()).copyto(arr)


class FastTextClassifier(gluon.HybridBlock):
    """Summed loss of a batch's documents given its bag matrix and its gathered input rows.

    `bag` is a CSR (documents x U) of weights count/length over the batch's U unique rows,
    `rows` the (U, dim) input rows themselves, `targets` the (documents,) label ids.
    """

    def __init__(self, num_input_rows: int, dim: int, label_counts, loss: str = "softmax", seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss_name = loss
        self.dim = dim
        self.num_labels = len(label_counts)
        self.tree = HuffmanTree(label_counts) if loss == "hs" else None
        with self.name_scope():
            self.input_matrix = self.params.get("input_matrix", shape=(num_input_rows, dim),
                                                init=SeededUniform(1.0 / dim, seed), grad_req="null")
            # fastText allocates one output row per label for both losses; hs uses nlabels - 1.
            self.output_matrix = self.params.get("output_matrix", shape=(self.num_labels, dim),
                                                 init=mx.init.Zero())
            if self.tree is not None:
                self.paths = self.params.get_constant("paths", self.tree.path_matrix.astype(np.float32))
                self.codes = self.params.get_constant("codes", self.tree.code_matrix)
                self.path_mask = self.params.get_constant("path_mask", self.tree.mask)

    def gather_rows(self, unique_ids: mx.nd.NDArray) -> mx.nd.NDArray:
        """A copy of the input rows a batch uses: O(batch), not O(table)."""
        return mx.nd.take(self.input_matrix.data(unique_ids.context), unique_ids)

    def state_arrays(self, touched_rows: np.ndarray) -> Dict[str, np.ndarray]:
        """Parameters for a checkpoint: the input rows marked in `touched_rows` (the others
        still hold their seeded initial values) and the whole output matrix."""
        ids = np.flatnonzero(touched_rows).astype(np.int64)
        matrix = self.input_matrix.data()
        values = mx.nd.take(matrix, mx.nd.array(ids, dtype=np.int64, ctx=matrix.context))
        return {"input_rows": ids, "input_values": values.asnumpy(),
                "output_matrix": self.output_matrix.data().asnumpy()}

    def load_state_arrays(self, arrays: Dict[str, np.ndarray]):
        """Inverse of `state_arrays`, on a model initialised with the same seed."""
        if arrays["output_matrix"].shape != self.output_matrix.shape:
            raise ValueError(f"output matrix {arrays['output_matrix'].shape} != {self.output_matrix.shape}")
        matrix = self.input_matrix.data()
        ids = mx.nd.array(arrays["input_rows"], dtype=np.int64, ctx=matrix.context)
        matrix[ids] = mx.nd.array(arrays["input_values"], ctx=matrix.context)
        self.output_matrix.set_data(mx.nd.array(arrays["output_matrix"], ctx=matrix.context))

    def hidden(self, F, bag, rows):
        """Mean of each document's input rows (fastText's `computeHidden`)."""
        return F.sparse.dot(bag, rows)

    def hybrid_forward(self, F, bag, rows, targets, input_matrix, output_matrix, **tree):
        hidden = self.hidden(F, bag, rows)
        if self.tree is None:
            scores = F.FullyConnected(hidden, output_matrix, no_bias=True, num_hidden=self.num_labels)
            return F.softmax_cross_entropy(scores, targets)
        return hs_loss(F, hidden, output_matrix,
                       F.take(tree["paths"], targets), F.take(tree["codes"], targets),
                       F.take(tree["path_mask"], targets)).sum()

    def top_k(self, bag, rows, k: int, threshold: float = 0.0):
        """fastText's `predict`: per document, up to k (label id, probability) pairs, best first."""
        hidden = self.hidden(mx.nd, bag, rows)
        output = self.output_matrix.data(rows.context)
        if self.tree is not None:
            return hs_top_k(self.tree, hidden.asnumpy(), output.asnumpy(), k, threshold)
        probs = mx.nd.softmax(mx.nd.dot(hidden, output, transpose_b=True)).asnumpy()
        k = min(k, self.num_labels) if k > 0 else self.num_labels
        best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(int(label), float(p[label])) for label in row if p[label] >= threshold]
                for row, p in zip(best, probs)]
