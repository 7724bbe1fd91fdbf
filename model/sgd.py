"""fastText's optimiser: plain SGD, linearly decaying learning rate, lazy sparse rows.

Summed gradients, the rule this project's learning rate follows (everything else that
mentions it points here). fastText's --lr is a step size *per example*: each example's
gradient is applied at once with `lr * (1 - progress)`. A step here applies the *sum* of
the per-example gradients of its global batch (the gradient exchange sums over ranks,
never averages) with that rate, so --lr means the same for any batch size and any number
of ranks, and there is no `lr * N` rule to apply. Progress, which drives the linear
decay, counts the fastText tokens of all ranks. The price: a step moves the weights by
lr x global batch example-steps at once, and past about 16 (`step_size.py`) training
diverges, so the default batch shrinks as lr grows.

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
