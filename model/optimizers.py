"""Update rules: fastText's summed SGD for small global batches; row-mean SGD (the default), with
lazy Nesterov momentum on the rows from 4,096 documents a step, or row-wise Adagrad for large ones.

All take what a step's exchange delivers: the *summed* gradients of the global batch's
documents for the input rows it touched (sorted unique ids, O(rows touched)) and for the
dense output matrix. Which rule a run uses, and its default learning rate, is decided
before MXNet loads (`step_size.choose_optimizer`).

`SummedSGD` is fastText's arithmetic: each example's gradient applied at
`lr * (1 - progress)`, so applying the sum of a batch's gradients at that rate keeps the
per-example step of fastText whatever the batch (and, under Horovod, the number of
ranks). It has no state besides progress, and it diverges once lr x global batch passes a
few tens (`step_size.STABLE_LR_TIMES_BATCH`): with thousands of documents a step a row's
summed gradient is thousands of per-example steps taken at once.

`RowMeanSGD` keeps fastText's step for a row one document used and divides the sum for a row
many used by nearly their number (see the class); it beats `RowAdagrad` on the Debian corpus at every
batch measured (README, "Large batches"): Adagrad's per-row steps shrink as 1/sqrt(updates),
and a large batch leaves few updates.

`RowMeanNesterov` adds lazy Nesterov momentum to row-mean SGD's row steps: at 4,096 documents a
step a common row takes ~10 steps an epoch, and momentum lets it travel further in them.

`RowAdagrad` divides each step by the root of the gradient it has seen, so a step's
size no longer grows with the batch: per input row one accumulator (MXNet's lazy
`contrib.group_adagrad_update`: a row's history is the mean over its coordinates, 4 bytes
a row), per output coordinate one (MXNet has no dense Adagrad op, so four NDArray ops).
Adagrad is invariant to a constant scale of the gradients, so the exchange's sums serve
as well as means and keep the epsilon negligible; MXNet puts the epsilon *inside* the
square root, where its default (1e-5) would cost points with small gradients. The rate
warms up linearly over the first `WARMUP` of training, then decays linearly to zero.

A rule's checkpointed state (`state_arrays`) names its per-input-row arrays `row_*`: one
entry per checkpoint row, the checkpoint's rows alone.
"""
from typing import Dict, Optional

import mxnet as mx
import numba
import numpy as np

from .memory_hints import prefetch_ahead
from .step_size import row_mean_output_share
from .tensors import empty_rows, host_view, rows_of, set_column, set_rows

WARMUP = 0.1         # share of training (in tokens) over which the large-batch rules' rate rises from 0
# Row-mean SGD divides a row's summed gradient by (documents using it) ** this: 1 is the mean, 0 the sum.
# Measured on validation splits: step_size's notes.
DOCUMENT_EXPONENT = 0.75
MOMENTUM = 0.9       # RowMeanNesterov's; measured on validation splits: step_size's notes
_EPSILON = 1e-10     # inside the root for rows (MXNet's op), outside for the output matrix


def linear_decay_lr(base_lr: float, progress: float) -> float:
    """fastText's schedule: `lr * (1 - progress)`, progress = tokens seen / (epochs * tokens)."""
    return base_lr * max(0.0, 1.0 - progress)


def warmup_then_decay_lr(base_lr: float, progress: float, warmup: float = WARMUP) -> float:
    """Linear rise to `base_lr` over the first `warmup` of training, then linear decay to 0."""
    if progress < warmup:
        return base_lr * progress / warmup
    return base_lr * max(0.0, 1.0 - progress) / (1.0 - warmup)


def sparse_sgd_step(weight: mx.nd.NDArray, row_ids: mx.nd.NDArray, row_message: mx.nd.NDArray, lr: float,
                    count_exponent: Optional[float] = None):
    """`weight[row_ids] -= lr * gradients`, touching only those rows (sorted unique int64 ids).

    The gradients are `row_message`'s first `dim` columns; with `count_exponent`, each row's
    divided by its document count (the next column, row-mean SGD's) ** the exponent. On the
    CPU a compiled loop updates the rows in place, the division included: MXNet's take,
    scale, subtract and `index_copy` cost 1.6 ms for 1,388 rows x 100 (Debian, batch 64), the
    loop 0.3; slicing out the counts and raising them to the power cost 1 ms more at 50k
    rows (Debian, batch 1,024). Elsewhere the rows are gathered, updated and written back in
    place (`index_copy` into `weight` itself: the same bits as MXNet's lazy row-sparse
    `sgd_update` in half its time). Both do the same float32 operations in the same order, so
    they give the same bits (tested).
    """
    if weight.context.device_type == "cpu":
        _subtract_scaled_rows(host_view(weight), host_view(row_ids), host_view(row_message),
                              None if count_exponent is None else np.float32(count_exponent), np.float32(lr))
        return
    _subtract_scaled_rows_with_operators(weight, row_ids, row_message, count_exponent, lr)


def _subtract_scaled_rows_with_operators(weight, row_ids, row_message, count_exponent, lr):
    """`sparse_sgd_step` in MXNet operators: gather the rows, update, write back with index_copy."""
    dim = weight.shape[1]
    row_grads = mx.nd.slice_axis(row_message, axis=1, begin=0, end=dim) if row_message.shape[1] != dim else row_message
    if count_exponent is not None:
        row_grads = mx.nd.broadcast_div(row_grads, _count_divisors(row_message, dim, count_exponent))
    mx.nd.contrib.index_copy(weight, row_ids, mx.nd.take(weight, row_ids) - lr * row_grads, out=weight)


def _count_divisors(row_message: mx.nd.NDArray, dim: int, count_exponent: float) -> mx.nd.NDArray:
    """(U, 1): each row's document count (`row_message`'s column `dim`) ** `count_exponent`."""
    return mx.nd.slice_axis(row_message, axis=1, begin=dim, end=dim + 1) ** count_exponent


@numba.njit(cache=True)
def _subtract_scaled_rows(weight, ids, message, count_exponent, lr):
    """`sparse_sgd_step` on numpy views; float32 throughout, as MXNet's operators compute it."""
    dim = weight.shape[1]
    for i in range(len(ids)):
        prefetch_ahead(weight, ids, i)
        row = weight[ids[i]]
        divisor = np.float32(1.0)
        if count_exponent is not None:
            divisor = message[i, dim] ** count_exponent
        for j in range(dim):
            grad = message[i, j]
            if count_exponent is not None:
                grad = grad / divisor
            row[j] -= lr * grad


def nesterov_rows_step(weight: mx.nd.NDArray, velocity: mx.nd.NDArray, last_step: mx.nd.NDArray,
                       row_ids: mx.nd.NDArray, row_message: mx.nd.NDArray, count_exponent: float, step: int,
                       momentum: float, lr: float):
    """Lazy Nesterov momentum on the rows `row_ids` (sorted unique int64 ids) at step number `step`.

    Per touched row, with g its gradient (`row_message`'s first `dim` columns / its document
    count, the next column, ** `count_exponent`):
    `v <- momentum ** (step - last_step) * v + g`, `last_step <- step`, `row -= lr * (g + momentum * v)`.
    A row's velocity decays by `momentum` a step whether or not the step touches it, but the
    decay of the steps that missed it is applied when one touches it again: O(rows touched), and
    untouched rows do not move. `velocity` (rows, dim) float32 and `last_step` (rows,) int32 are
    updated in place. On the CPU a compiled loop; elsewhere MXNet's take and index_copy (not
    run on a GPU by the tests; on the CPU they agree with the loop, tested).
    """
    if weight.context.device_type == "cpu":
        _nesterov_rows(host_view(weight), host_view(velocity), host_view(last_step), host_view(row_ids),
                       host_view(row_message), np.float32(count_exponent), step, np.float32(momentum), np.float32(lr))
        return
    _nesterov_rows_with_operators(weight, velocity, last_step, row_ids, row_message, count_exponent, step, momentum,
                                  lr)


@numba.njit(cache=True)
def _nesterov_rows(weight, velocity, last_step, ids, message, count_exponent, step, momentum, lr):
    """`nesterov_rows_step` on numpy views, float32 arithmetic."""
    dim = weight.shape[1]
    for i in range(len(ids)):
        prefetch_ahead(weight, ids, i)
        prefetch_ahead(velocity, ids, i)
        row_id = ids[i]
        decay = np.float32(momentum ** (step - last_step[row_id]))
        last_step[row_id] = step
        row, row_velocity = weight[row_id], velocity[row_id]
        divisor = message[i, dim] ** count_exponent
        for j in range(dim):
            grad = message[i, j] / divisor
            row_velocity[j] = decay * row_velocity[j] + grad
            row[j] -= lr * (grad + momentum * row_velocity[j])


def _nesterov_rows_with_operators(weight, velocity, last_step, row_ids, row_message, count_exponent, step, momentum,
                                  lr):
    """`nesterov_rows_step` in MXNet operators: gather the rows, update, write back with index_copy."""
    dim = weight.shape[1]
    grads = mx.nd.broadcast_div(mx.nd.slice_axis(row_message, axis=1, begin=0, end=dim),
                                _count_divisors(row_message, dim, count_exponent))
    elapsed = (step - mx.nd.take(last_step, row_ids)).astype(np.float32)
    decay = mx.nd.power(momentum, elapsed).reshape((-1, 1))
    rows_velocity = mx.nd.broadcast_mul(decay, mx.nd.take(velocity, row_ids)) + grads
    mx.nd.contrib.index_copy(velocity, row_ids, rows_velocity, out=velocity)
    mx.nd.contrib.index_copy(last_step, row_ids, mx.nd.full(len(row_ids), step, ctx=last_step.context,
                                                            dtype=last_step.dtype), out=last_step)
    mx.nd.contrib.index_copy(weight, row_ids, mx.nd.take(weight, row_ids) - lr * (grads + momentum * rows_velocity),
                             out=weight)


def dense_sgd_step(weight: mx.nd.NDArray, grad: mx.nd.NDArray, lr: float):
    mx.nd.sgd_update(weight, grad, lr=lr, wd=0.0, out=weight)


class SummedSGD:
    """fastText's optimiser: plain SGD on the summed gradients, linearly decaying rate."""

    name = "sgd"

    def learning_rate(self, base_lr: float, progress: float) -> float:
        return linear_decay_lr(base_lr, progress)

    def apply(self, input_matrix: mx.nd.NDArray, row_ids: mx.nd.NDArray, row_grads: mx.nd.NDArray,
              output_matrix: mx.nd.NDArray, output_grad: mx.nd.NDArray, lr: float):
        if len(row_ids):
            sparse_sgd_step(input_matrix, row_ids, row_grads, lr)
        dense_sgd_step(output_matrix, output_grad, lr)

    def row_message(self, doc_counts: np.ndarray, dim: int, ctx: mx.Context) -> mx.nd.NDArray:
        """What the exchange sums per touched row, (U, dim): the gradients alone, which the
        model's `gradients` writes into it."""
        return empty_rows(len(doc_counts), dim, ctx)

    def state_arrays(self, row_ids: np.ndarray) -> Dict[str, np.ndarray]:
        return {}

    def load_state_arrays(self, row_ids: np.ndarray, arrays: Dict[str, np.ndarray]):
        """Nothing to restore: SGD's only state is progress, which the checkpoint records."""


class OutputAdagrad:
    """Adagrad on the dense output matrix, one accumulator per coordinate (MXNet has no
    dense Adagrad op, so four NDArray ops); epsilon outside the root."""

    def __init__(self, shape, ctx: mx.Context):
        self.history = mx.nd.zeros(shape, ctx=ctx)

    def step(self, weight: mx.nd.NDArray, grad: mx.nd.NDArray, lr: float):
        self.history += mx.nd.square(grad)
        weight -= lr * grad / (mx.nd.sqrt(self.history) + _EPSILON)


class RowAdagrad:
    """Row-wise Adagrad on the input rows a step touched, Adagrad on the output matrix.

    State: `row_history` (input rows, 1) and the output matrix's history, zero at the
    start; a row's history changes only in steps that touch it, so a checkpoint stores it
    for the touched rows alone (`state_arrays`).
    """

    name = "adagrad"

    def __init__(self, num_input_rows: int, output_shape, ctx: mx.Context):
        self.row_history = mx.nd.zeros((num_input_rows, 1), ctx=ctx)
        self.output = OutputAdagrad(output_shape, ctx)

    def learning_rate(self, base_lr: float, progress: float) -> float:
        return warmup_then_decay_lr(base_lr, progress)

    def row_message(self, doc_counts: np.ndarray, dim: int, ctx: mx.Context) -> mx.nd.NDArray:
        return empty_rows(len(doc_counts), dim, ctx)

    def apply(self, input_matrix: mx.nd.NDArray, row_ids: mx.nd.NDArray, row_grads: mx.nd.NDArray,
              output_matrix: mx.nd.NDArray, output_grad: mx.nd.NDArray, lr: float):
        if len(row_ids):
            grad = mx.nd.sparse.row_sparse_array((row_grads, row_ids), shape=input_matrix.shape,
                                                 ctx=input_matrix.context)
            mx.nd.contrib.group_adagrad_update(input_matrix, grad, self.row_history, lr=lr, epsilon=_EPSILON,
                                               out=input_matrix)
        self.output.step(output_matrix, output_grad, lr)

    def state_arrays(self, row_ids: np.ndarray) -> Dict[str, np.ndarray]:
        """The history of `row_ids` (a checkpoint's input rows) and the whole output history."""
        return {"row_history": rows_of(self.row_history, row_ids), "output_history": self.output.history.asnumpy()}

    def load_state_arrays(self, row_ids: np.ndarray, arrays: Dict[str, np.ndarray]):
        """Inverse of `state_arrays` on a zero state; other rows keep their (zero) history."""
        set_rows(self.row_history, row_ids, arrays["row_history"])
        self.output.history[:] = mx.nd.array(arrays["output_history"], ctx=self.row_history.context)


class RowMeanSGD:
    """fastText's SGD on each touched input row's summed gradient over the k documents that
    used it divided by k ** `DOCUMENT_EXPONENT` (0.75: between the mean and the sum), Adagrad
    on the output matrix.

    A row one document of the step used moves exactly as fastText moves it for that
    example (`lr x` its gradient); a row many documents used moves by k ** 0.25 times the
    mean of their gradients instead of k times (the sum, which diverges), so its step grows
    only slowly with the batch. The plain mean (exponent 1) leaves common rows behind at
    4,096 documents a step, where an epoch is ~10 steps for them against fastText's one per
    document (Debian validation: 0.765 against 0.789; see `step_size`). The per-row
    document counts travel with the row gradients through the exchange as one more column
    (`row_message`), so ranks sum them with the gradients and N ranks x B see the counts of
    one process x N*B. The output matrix, which every document touches, takes Adagrad at
    `output_lr_share` of the rows' rate (`step_size.row_mean_output_share`: measured, the
    output's best rate does not grow with the batch as the rows' does). One schedule for
    both: warm-up over the first `WARMUP` of training, then linear decay.
    State: the output matrix's history alone; input rows have none.
    """

    name = "rowmean"

    def __init__(self, output_shape, ctx: mx.Context, output_lr_share: float = 1.0):
        self.output = OutputAdagrad(output_shape, ctx)
        self.output_lr_share = output_lr_share

    def learning_rate(self, base_lr: float, progress: float) -> float:
        return warmup_then_decay_lr(base_lr, progress)

    def row_message(self, doc_counts: np.ndarray, dim: int, ctx: mx.Context) -> mx.nd.NDArray:
        """(U, dim + 1): the rows' summed gradients (left for the model's `gradients` to write: no
        concatenation, 2.3 ms a step at 50k rows), then how many documents used each."""
        message = empty_rows(len(doc_counts), dim + 1, ctx)
        if len(doc_counts):
            set_column(message, dim, doc_counts)
        return message

    def apply(self, input_matrix: mx.nd.NDArray, row_ids: mx.nd.NDArray, row_message: mx.nd.NDArray,
              output_matrix: mx.nd.NDArray, output_grad: mx.nd.NDArray, lr: float):
        if len(row_ids):
            self._step_rows(input_matrix, row_ids, row_message, lr)
        self.output.step(output_matrix, output_grad, self.output_lr_share * lr)

    def _step_rows(self, input_matrix: mx.nd.NDArray, row_ids: mx.nd.NDArray, row_message: mx.nd.NDArray, lr: float):
        """The touched rows' step on their gradients, `row_message`'s first columns / documents ** exponent."""
        sparse_sgd_step(input_matrix, row_ids, row_message, lr, count_exponent=DOCUMENT_EXPONENT)

    def state_arrays(self, row_ids: np.ndarray) -> Dict[str, np.ndarray]:
        return {"output_history": self.output.history.asnumpy()}

    def load_state_arrays(self, row_ids: np.ndarray, arrays: Dict[str, np.ndarray]):
        self.output.history[:] = mx.nd.array(arrays["output_history"], ctx=self.output.history.context)


class RowMeanNesterov(RowMeanSGD):
    """Row-mean SGD's gradients (a row's sum over the k documents using it / k ** `DOCUMENT_EXPONENT`)
    with lazy Nesterov momentum `MOMENTUM` on the input rows (`nesterov_rows_step`); the output
    matrix's Adagrad and the schedule as row-mean SGD's.

    At 4,096 documents a step an epoch of Debian is ~10 steps for its common rows, and row-mean
    SGD stops improving after epoch 5 (`step_size`'s notes): undamped momentum lets a row the
    steps keep touching move up to 1 / (1 - `MOMENTUM`) times as far, a rare row's step stays
    one step's. Measured (validation splits, `step_size`): it closes Debian's gap from 4,096 and
    loses at 256, so `--optimizer auto` takes it from `step_size.SMALLEST_MOMENTUM_GLOBAL_BATCH`.
    State derives from the exchanged, summed row message alone, so N ranks x B train as one
    process x N*B. State: per input row a velocity (dim float32) and the step that last touched
    it (int32), plus the step counter and the output's history; a checkpoint stores the rows'
    state for the touched rows alone (untouched: zero velocity).
    """

    name = "nesterov"

    def __init__(self, num_input_rows: int, output_shape, ctx: mx.Context, output_lr_share: float = 1.0,
                 momentum: float = MOMENTUM):
        super().__init__(output_shape, ctx, output_lr_share)
        self.momentum = momentum
        self.velocity = mx.nd.zeros((num_input_rows, output_shape[1]), ctx=ctx)
        self.last_step = mx.nd.zeros((num_input_rows,), ctx=ctx, dtype=np.int32)
        self.step = 0  # steps applied; every rank counts every global step

    def apply(self, input_matrix: mx.nd.NDArray, row_ids: mx.nd.NDArray, row_message: mx.nd.NDArray,
              output_matrix: mx.nd.NDArray, output_grad: mx.nd.NDArray, lr: float):
        self.step += 1
        super().apply(input_matrix, row_ids, row_message, output_matrix, output_grad, lr)

    def _step_rows(self, input_matrix: mx.nd.NDArray, row_ids: mx.nd.NDArray, row_message: mx.nd.NDArray, lr: float):
        nesterov_rows_step(input_matrix, self.velocity, self.last_step, row_ids, row_message, DOCUMENT_EXPONENT,
                           self.step, self.momentum, lr)

    def state_arrays(self, row_ids: np.ndarray) -> Dict[str, np.ndarray]:
        """The velocity and last step of `row_ids` (a checkpoint's input rows), the step counter and
        the output history."""
        return {**super().state_arrays(row_ids), "row_velocity": rows_of(self.velocity, row_ids),
                "row_last_step": rows_of(self.last_step, row_ids), "optimizer_step": np.array([self.step], np.int64)}

    def load_state_arrays(self, row_ids: np.ndarray, arrays: Dict[str, np.ndarray]):
        """Inverse of `state_arrays`: `row_ids`' rows and the counter; other rows keep their state."""
        super().load_state_arrays(row_ids, arrays)
        self.step = int(arrays["optimizer_step"][0])
        set_rows(self.velocity, row_ids, arrays["row_velocity"])
        set_rows(self.last_step, row_ids, arrays["row_last_step"])


def build_optimizer(name: str, num_input_rows: int, output_shape, ctx: mx.Context, global_batch: int):
    """The rule `name` (`step_size.OPTIMIZERS`, "auto" resolved) for `global_batch` documents a
    step, with a fresh state on `ctx`."""
    if name == SummedSGD.name:
        return SummedSGD()
    if name == RowAdagrad.name:
        return RowAdagrad(num_input_rows, output_shape, ctx)
    if name == RowMeanSGD.name:
        return RowMeanSGD(output_shape, ctx, row_mean_output_share(global_batch))
    if name == RowMeanNesterov.name:
        return RowMeanNesterov(num_input_rows, output_shape, ctx, row_mean_output_share(global_batch))
    raise ValueError(f"unknown optimizer {name!r}")
