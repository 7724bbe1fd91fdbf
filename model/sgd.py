"""fastText's optimiser: plain SGD, linearly decaying learning rate, lazy sparse rows.

fastText applies each example's gradient at once with `lr * (1 - progress)`; we apply the
*sum* of a batch's per-example gradients with the same rate, so the per-example step
size matches fastText's whatever the batch (and, under Horovod, the number of ranks).
SGD without momentum has no state besides progress, which the checkpoint records.
"""
import mxnet as mx


def linear_decay_lr(base_lr: float, progress: float) -> float:
    """fastText's schedule: `lr * (1 - progress)`, progress = tokens seen / (epochs * tokens)."""
    return base_lr * max(0.0, 1.0 - progress)


def sparse_sgd_step(weight: mx.nd.NDArray, row_ids: mx.nd.NDArray, row_grads: mx.nd.NDArray, lr: float):
    """`weight[row_ids] -= lr * row_grads`, touching only those rows (sorted unique int64 ids)."""
    grad = mx.nd.sparse.row_sparse_array((row_grads, row_ids), shape=weight.shape, ctx=weight.context)
    mx.nd.sgd_update(weight, grad, lr=lr, wd=0.0, lazy_update=True, out=weight)


def dense_sgd_step(weight: mx.nd.NDArray, grad: mx.nd.NDArray, lr: float):
    mx.nd.sgd_update(weight, grad, lr=lr, wd=0.0, out=weight)
