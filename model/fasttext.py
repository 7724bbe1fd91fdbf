"""The fastText classifier as a Gluon block: bag of input rows -> mean -> output layer -> loss.

The input matrix (`nwords + bucket` rows) is never differentiated as a whole: a step
gathers only the rows its batch uses (`gather_rows`), the block differentiates that small
dense block, and `optimizers` writes the result back lazily. Both matrices are
initialised as fastText does: input uniform in +-1/dim, output zero.

Losses, as fastText's `src/loss.cc`: `softmax` and `hs` train a document on one of its
labels; `ova` (one-vs-all) on all of them at once, an independent binary logistic loss per
label (`OneVsAllLoss::forward`), and predicts with independent sigmoids. Label sets travel as
`(documents, width)` label-id matrices padded with -1 (`data_pipeline.batching.label_matrix`).
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from fasttext_horovod.data_pipeline.batching import Batch
from fasttext_horovod.data_pipeline.worker_pool import usable_cores

from .bag_products import bag_times_rows, bag_transpose_times
from .checkpoint import RowBlocks
from .hierarchical_softmax import HuffmanTree, hs_loss, hs_top_k
from .losses import LOSSES
from .softmax_head import softmax_loss_and_gradients
from .tensors import batch_tensors, empty_rows, host_view, huge_page_zeros, set_rows, to_device


_ROWS_PER_COPY = 1 << 20  # input rows a checkpoint copies off the device at once (40 MB at dim 10)


class SeededUniform(mx.init.Initializer):
    """fastText's input init, uniform in +-scale, drawn on the CPU from a seed.

    Row r's values depend on the seed, the width and r alone: rows are drawn in fixed
    blocks, block b from its own PCG64 stream (`SeedSequence(seed, spawn_key=(b,))`), so a
    checkpoint need not store untouched rows (they are regenerated, see `state_arrays`), and
    the blocks fill on every core at once. A 10M x 10 matrix takes 0.22 s alone on 2 cores,
    0.3-0.4 s in a run beside the prefetching process; MXNet's sampler took 1.4-1.9 s there.
    """

    BLOCK_ROWS = 1 << 18

    def __init__(self, scale: float, seed: int):
        super().__init__(scale=scale, seed=seed)
        self.scale = scale
        self.seed = seed

    def fill(self, out: np.ndarray, threads: Optional[int] = None) -> None:
        """Draw the values into a C-contiguous (rows, width) float32 array, on `threads`
        threads (default: every core this process may use)."""
        def fill_block(start: int) -> None:
            block = out[start:start + self.BLOCK_ROWS]
            stream = np.random.Generator(np.random.PCG64(
                np.random.SeedSequence(self.seed, spawn_key=(start // self.BLOCK_ROWS,))))
            stream.random(dtype=np.float32, out=block)  # numpy releases the GIL while it fills
            block *= 2 * self.scale
            block -= self.scale

        with ThreadPoolExecutor(max_workers=threads or usable_cores()) as pool:
            list(pool.map(fill_block, range(0, len(out), self.BLOCK_ROWS)))

    def _init_weight(self, name, arr):
        if arr.context == mx.cpu() and arr.stype == "default":  # drawn in place: a temporary would double it
            self.fill(host_view(arr))
        else:
            values = np.empty(arr.shape, dtype=np.float32)
            self.fill(values)
            mx.nd.from_numpy(values, zero_copy=True).copyto(arr)


class CpuStorageParameter(gluon.Parameter):
    """A Parameter that keeps, on the CPU, the array its initializer filled as its storage.

    Gluon's `_init_impl` draws the initial values into a CPU array and then copies it to
    each context, even the CPU itself: for a 10M x 10 input matrix that held 400 MB twice
    (+456 MB at `initialize`). Elsewhere (a GPU) the copy is the transfer and stays.
    On the CPU that array is also allocated on huge pages (`tensors.huge_page_zeros`).
    """

    def _finish_deferred_init(self):
        if self._deferred_init:
            init, ctx_list, default_init, data = self._deferred_init
            if data is None and list(ctx_list) == [mx.cpu()]:
                # What Gluon's own `_finish_deferred_init` does, on memory of our choosing.
                data = huge_page_zeros(self.shape, self.dtype)
                mx.init.create(default_init)(mx.init.InitDesc(self.name, {"__init__": init}), data)
                self._deferred_init = (init, ctx_list, default_init, data)
        super()._finish_deferred_init()

    def _init_impl(self, data, ctx_list):
        ctx_list = list(ctx_list)
        if ctx_list != [data.context]:
            super()._init_impl(data, ctx_list)
            return
        super()._init_impl(data, [])  # the bookkeeping for no context: nothing is copied
        self._ctx_list = ctx_list
        self._ctx_map = [[], []]
        self._ctx_map[data.context.device_typeid & 1] = [None] * data.context.device_id + [0]
        self._data = [data]
        self._init_grad()


def multi_hot(F, label_sets, num_labels: int):
    """(B, num_labels) 0/1 membership of (B, width) label-id rows padded with -1.

    A label repeated on a line counts once, as fastText's `utils::contains` sees it.
    """
    return F.max(F.one_hot(label_sets, depth=num_labels), axis=1)


def ova_loss(F, scores, targets):
    """Per-document one-vs-all loss, shape (B,), given (B, labels) scores and 0/1 targets.

    fastText's `binaryLogistic` summed over every label: -log sigmoid(s) for a gold label,
    -log(1 - sigmoid(s)) for the others, both `softrelu(-(2y - 1) s)` (overflow-safe, and
    exact at fastText's zero-initialised s = 0). Its gradient in s is sigmoid(s) - y, so
    -lr times it is fastText's `alpha = lr * (label - score)`: autograd of the sum gives
    fastText's per-example update (fastText reads sigmoid from a 512-entry table; we compute
    it exactly). Each label has its own output row, so fastText applying the labels' updates
    one after another equals applying them together.
    """
    return F.sum(F.Activation(-(2.0 * targets - 1.0) * scores, act_type="softrelu"), axis=1)


def trains_on_all_labels(loss: str) -> bool:
    """Whether a document trains on its whole label set (fastText's `kAllLabelsAsTarget`,
    used by ova) rather than on one label drawn from it (softmax, hs)."""
    return loss == "ova"


class FastTextClassifier(gluon.HybridBlock):
    """Summed loss of a batch's documents given its bag matrix and its gathered input rows.

    `bag` is a CSR (documents x U) of weights count/length over the batch's U unique rows,
    `rows` the (U, dim) input rows themselves; `targets` the (documents,) label id each
    document trains on (softmax, hs), or for ova the (documents, width) label sets padded
    with -1 (see `all_labels_as_target`).
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
            # Registered as `params.get` would, as a Parameter that does not copy its initial values.
            self.input_matrix = CpuStorageParameter(self.params.prefix + "input_matrix", shape=(num_input_rows, dim),
                                                    init=SeededUniform(1.0 / dim, seed), grad_req="null")
            self.params.update({self.input_matrix.name: self.input_matrix})
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

    def state_arrays(self, touched_rows: np.ndarray) -> Dict[str, object]:
        """Parameters for a checkpoint: the input rows marked in `touched_rows` (the others
        still hold their seeded initial values) and the whole output matrix.

        The touched rows' values are copied off the device a block at a time while the
        checkpoint is written (`RowBlocks`), so save before the next update.
        """
        ids = np.flatnonzero(touched_rows).astype(np.int64)
        matrix = self.input_matrix.data()

        def blocks():
            for start in range(0, len(ids), _ROWS_PER_COPY):
                block = mx.nd.array(ids[start:start + _ROWS_PER_COPY], dtype=np.int64, ctx=matrix.context)
                yield mx.nd.take(matrix, block).asnumpy()

        return {"input_rows": ids, "input_values": RowBlocks((len(ids), matrix.shape[1]), matrix.dtype, blocks),
                "output_matrix": self.output_matrix.data().asnumpy()}

    def load_state_arrays(self, arrays: Dict[str, np.ndarray]):
        """Inverse of `state_arrays`, on a model initialised with the same seed."""
        if arrays["output_matrix"].shape != self.output_matrix.shape:
            raise ValueError(f"output matrix {arrays['output_matrix'].shape} != {self.output_matrix.shape}")
        self.set_input_rows(arrays["input_rows"], arrays["input_values"])
        self.output_matrix.set_data(mx.nd.array(arrays["output_matrix"], ctx=self.input_matrix.data().context))

    def set_input_rows(self, ids: np.ndarray, values: np.ndarray):
        """`input_matrix[ids] = values` (unique int64 ids, (len(ids), dim) values)."""
        set_rows(self.input_matrix.data(), ids, values)

    def hidden(self, F, bag, rows):
        """Mean of each document's input rows (fastText's `computeHidden`)."""
        return F.sparse.dot(bag, rows)

    @property
    def all_labels_as_target(self) -> bool:
        return trains_on_all_labels(self.loss_name)

    def _scores(self, F, hidden, output_matrix):
        return F.FullyConnected(hidden, output_matrix, no_bias=True, num_hidden=self.num_labels)

    def _label_loss(self, F, hidden, output_matrix, labels, tree):
        """softmax and hs: per example, -log p(label), the loss fastText trains on."""
        if self.tree is None:
            return -F.pick(F.log_softmax(self._scores(F, hidden, output_matrix)), labels)
        return hs_loss(F, hidden, output_matrix, F.take(tree["paths"], labels), F.take(tree["codes"], labels),
                       F.take(tree["path_mask"], labels))

    def hybrid_forward(self, F, bag, rows, targets, input_matrix, output_matrix, **tree):
        return self._hidden_loss(F, self.hidden(F, bag, rows), targets, output_matrix, tree)

    def _hidden_loss(self, F, hidden, targets, output_matrix, tree):
        """The batch's summed loss given its hidden layer."""
        if self.all_labels_as_target:
            return ova_loss(F, self._scores(F, hidden, output_matrix),
                            multi_hot(F, targets, self.num_labels)).sum()
        return self._label_loss(F, hidden, output_matrix, targets, tree).sum()

    def _tree_constants(self, ctx) -> dict:
        return ({"paths": self.paths.data(ctx), "codes": self.codes.data(ctx), "path_mask": self.path_mask.data(ctx)}
                if self.tree is not None else {})

    def gradients(self, batch: Batch, ctx: mx.Context, row_grads: Optional[mx.nd.NDArray] = None):
        """(summed loss, (U, dim) gradients of the batch's unique input rows, output-matrix
        gradient) of a non-empty batch; the output gradient is the parameter's own buffer.

        `row_grads`, when given, is a (U, dim + k) array whose first `dim` columns receive the
        row gradients (the update rule's row message, its own k columns left as they are) and
        is what is returned; by default a (U, dim) array of their own.

        On the CPU the bag products run as compiled loops on the batch's numpy arrays
        (`bag_products`: MXNet's bits, ~2.5 ms less a step at batch 64), and so does the
        softmax layer (`softmax_head`); hs and ova are differentiated by autograd from the
        hidden layer on. Elsewhere autograd differentiates the whole block from the gathered
        rows.
        """
        if row_grads is None:
            row_grads = empty_rows(len(batch.unique_ids), self.dim, ctx)
        if ctx.device_type != "cpu":
            ids, bag, targets = batch_tensors(batch, ctx)
            rows = self.gather_rows(ids)
            rows.attach_grad(stype="row_sparse")
            with autograd.record():
                loss = self(bag, rows, targets)
            loss.backward()
            # Every batch column is used, so the row-sparse gradient holds all U rows in order.
            row_grads[:, :self.dim] = rows.grad.data
            return loss, row_grads, self.output_matrix.grad(ctx)
        hidden = np.empty((batch.num_docs, self.dim), np.float32)
        bag_times_rows(host_view(self.input_matrix.data(ctx)), batch.unique_ids, batch.bag_data, batch.bag_indices,
                       batch.bag_indptr, hidden)
        loss, hidden_grad = self._head_gradients(hidden, batch.targets, ctx)
        bag_transpose_times(batch.bag_data, batch.bag_indices, batch.bag_indptr, hidden_grad, host_view(row_grads))
        return loss, row_grads, self.output_matrix.grad(ctx)

    def _head_gradients(self, hidden: np.ndarray, targets: np.ndarray, ctx: mx.Context):
        """(summed loss, its gradient in `hidden`) on the CPU; the output matrix's gradient goes
        to its parameter's buffer."""
        output, output_grad = self.output_matrix.data(ctx), self.output_matrix.grad(ctx)
        if self.loss_name == "softmax":
            hidden_grad = np.empty_like(hidden)
            loss = softmax_loss_and_gradients(hidden, host_view(output), targets, hidden_grad, host_view(output_grad))
            return to_device(np.array([loss], np.float32), ctx), hidden_grad
        hidden = to_device(hidden, ctx)
        hidden.attach_grad()
        with autograd.record():
            loss = self._hidden_loss(mx.nd, hidden, to_device(targets.astype(np.float32), ctx), output,
                                     self._tree_constants(ctx))
        loss.backward()
        return loss, hidden.grad.asnumpy()

    def document_losses(self, bag, rows, label_sets: mx.nd.NDArray) -> np.ndarray:
        """Per document, its loss against its whole gold label set: what validation reports.

        `label_sets` is (documents, width), padded with -1. ova: the loss it trains on.
        softmax and hs train on one label drawn uniformly from the set, so their expected
        training loss is the mean over the set of -log p(label).
        """
        ctx = rows.context
        hidden = self.hidden(mx.nd, bag, rows)
        output = self.output_matrix.data(ctx)
        if self.all_labels_as_target:
            targets = multi_hot(mx.nd, label_sets, self.num_labels)
            return ova_loss(mx.nd, self._scores(mx.nd, hidden, output), targets).asnumpy()
        docs, width = label_sets.shape
        tree = self._tree_constants(ctx)
        # One (document, label) pair per cell; padding cells score label 0 and are masked out.
        pair_losses = self._label_loss(mx.nd, mx.nd.repeat(hidden, width, axis=0), output,
                                       mx.nd.maximum(label_sets, 0).reshape(-1), tree).reshape(docs, width)
        present = label_sets >= 0
        return ((pair_losses * present).sum(axis=1) / present.sum(axis=1)).asnumpy()

    def ranked_labels(self, bag, rows, k: int, threshold: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """fastText's `predict` as arrays: per document its best labels, best first, and their
        probabilities, each (documents, k); k <= 0 means every label (fastText's `-1`). Past
        the labels of probability >= threshold (hs: past those its tree search found) a row
        holds label -1 and probability 0.

        Probabilities are a softmax, independent sigmoids (ova), or Huffman-tree paths (hs).
        """
        k = min(k, self.num_labels) if k > 0 else self.num_labels
        hidden = self.hidden(mx.nd, bag, rows)
        output = self.output_matrix.data(rows.context)
        if self.tree is not None:
            found = hs_top_k(self.tree, hidden.asnumpy(), output.asnumpy(), k, threshold)
            labels, probs = np.full((len(found), k), -1, np.int64), np.zeros((len(found), k))
            for d, pairs in enumerate(found):
                labels[d, :len(pairs)] = [label for label, _ in pairs]
                probs[d, :len(pairs)] = [p for _, p in pairs]
            return labels, probs
        scores = mx.nd.dot(hidden, output, transpose_b=True)
        probs = (mx.nd.sigmoid(scores) if self.all_labels_as_target else mx.nd.softmax(scores)).asnumpy()
        best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        best_probs = np.take_along_axis(probs, best, axis=1)
        kept = best_probs >= threshold  # a prefix of each row: they are in falling order
        return np.where(kept, best, -1), np.where(kept, best_probs, 0)

    def top_k(self, bag, rows, k: int, threshold: float = 0.0) -> List[List[Tuple[int, float]]]:
        """`ranked_labels` as lists: per document, up to k (label id, probability) pairs."""
        labels, probs = self.ranked_labels(bag, rows, k, threshold)
        return [[(int(label), float(p)) for label, p in zip(row_labels, row_probs) if label >= 0]
                for row_labels, row_probs in zip(labels, probs)]
