"""Update rules: which one a global batch gets, and what row-wise Adagrad and row-mean SGD write (and do not)."""
import mxnet as mx
import numpy as np
import pytest

from fasttext_horovod.model.optimizers import (DOCUMENT_EXPONENT, MOMENTUM, RowAdagrad, RowMeanNesterov, RowMeanSGD,
                                                SummedSGD, _nesterov_rows_with_operators,
                                                _subtract_scaled_rows_with_operators, build_optimizer,
                                                nesterov_rows_step, sparse_sgd_step, warmup_then_decay_lr)
from fasttext_horovod.model.step_size import (DEFAULT_LR, LARGEST_SGD_GLOBAL_BATCH, SMALLEST_MOMENTUM_GLOBAL_BATCH,
                                              choose_optimizer, default_lr)
from fasttext_horovod.model.tensors import host_view

ROWS, DIM, LABELS = 1000, 4, 3


def adagrad_reference(weight, history, ids, grads, lr):
    """Row-wise Adagrad in numpy: a row's history sums the mean of its squared gradient."""
    weight, history = weight.copy(), history.copy()
    history[ids] += (grads ** 2).mean(axis=1, keepdims=True)
    weight[ids] -= lr * grads / np.sqrt(history[ids])
    return weight, history


def row_message(rule, grads, doc_counts):
    """`rule`'s row message for rows with these gradients, used by `doc_counts` documents each."""
    message = rule.row_message(np.asarray(doc_counts), grads.shape[1], mx.cpu())
    host_view(message)[:, :grads.shape[1]] = grads  # as the model's `gradients` writes them
    return message


def apply(rule, weight, output, ids, grads, output_grad, lr, doc_counts=None):
    """One step of `rule` on numpy arrays; `doc_counts` (per row, default 1) go into the rule's row message."""
    input_matrix, output_matrix = mx.nd.array(weight), mx.nd.array(output)
    counts = np.ones(len(ids), dtype=np.int64) if doc_counts is None else doc_counts
    rule.apply(input_matrix, mx.nd.array(ids, dtype=np.int64), row_message(rule, grads, counts),
               output_matrix, mx.nd.array(output_grad), lr)
    return input_matrix.asnumpy(), output_matrix.asnumpy()


def test_auto_keeps_fasttext_sgd_for_small_global_batches_row_mean_sgd_above_and_momentum_from_4096():
    assert choose_optimizer("auto", LARGEST_SGD_GLOBAL_BATCH) == "sgd"
    assert choose_optimizer("auto", LARGEST_SGD_GLOBAL_BATCH + 1) == "rowmean"
    assert choose_optimizer("auto", SMALLEST_MOMENTUM_GLOBAL_BATCH - 1) == "rowmean"
    assert SMALLEST_MOMENTUM_GLOBAL_BATCH == 4096 and choose_optimizer("auto", 4096) == "nesterov"
    assert choose_optimizer("sgd", 8192) == "sgd" and choose_optimizer("adagrad", 8) == "adagrad"


def test_default_lr_follows_the_rule_and_the_batch():
    assert default_lr("auto", 64) == 0.1 and default_lr("auto", 64, sgd_lr=0.5) == 0.5
    assert default_lr("auto", 1024, sgd_lr=0.5) == default_lr("rowmean", 1024) != 0.5
    assert default_lr("rowmean", 4096) == default_lr("rowmean", 1024) > default_lr("rowmean", 256) > 0
    assert default_lr("auto", 4096) == default_lr("nesterov", 4096) == DEFAULT_LR["nesterov"] == 2.0
    assert default_lr("auto", 4095) == default_lr("rowmean", 4095)


def test_adagrad_rate_warms_up_then_decays_to_zero():
    rates = [warmup_then_decay_lr(2.0, p, warmup=0.1) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
    assert rates == pytest.approx([0.0, 1.0, 2.0, 1.0, 0.0])


def test_row_adagrad_updates_the_touched_rows_as_adagrad_and_no_other():
    rng = np.random.default_rng(0)
    weight = rng.uniform(-1, 1, (ROWS, DIM)).astype(np.float32)
    output = rng.normal(size=(LABELS, DIM)).astype(np.float32)
    rule = RowAdagrad(ROWS, (LABELS, DIM), mx.cpu())
    history = np.zeros((ROWS, 1), dtype=np.float32)
    output_history = np.zeros((LABELS, DIM), dtype=np.float32)
    for step, ids in enumerate((np.array([3, 17, 999]), np.array([17, 500]))):
        grads = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        output_grad = rng.normal(size=(LABELS, DIM)).astype(np.float32)
        new_weight, new_output = apply(rule, weight, output, ids, grads, output_grad, lr=0.5)
        weight, history = adagrad_reference(weight, history, ids, grads, 0.5)
        output_history += output_grad ** 2
        output = output - 0.5 * output_grad / np.sqrt(output_history)
        np.testing.assert_allclose(new_weight, weight, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new_output, output, rtol=1e-5, atol=1e-6)
        weight, output = new_weight, new_output
    np.testing.assert_allclose(rule.row_history.asnumpy(), history, rtol=1e-5)
    assert np.count_nonzero(rule.row_history.asnumpy()) == 4  # rows 3, 17, 500, 999


def test_row_adagrad_step_does_not_grow_with_the_batch():
    """Summing 1,000 documents' gradients moves a row as far as one document's: no divergence."""
    ids, grads = np.array([5]), np.full((1, DIM), 0.01, dtype=np.float32)
    moved = []
    for scale in (1.0, 1000.0):
        rule = RowAdagrad(ROWS, (LABELS, DIM), mx.cpu())
        weight, _ = apply(rule, np.zeros((ROWS, DIM), np.float32), np.zeros((LABELS, DIM), np.float32), ids,
                          scale * grads, np.zeros((LABELS, DIM), np.float32), lr=0.5)
        moved.append(weight[5])
    np.testing.assert_allclose(moved[0], moved[1], rtol=1e-5)
    np.testing.assert_allclose(moved[0], -0.5, rtol=1e-4)


def test_row_adagrad_state_of_touched_rows_round_trips():
    rng = np.random.default_rng(1)
    rule = RowAdagrad(ROWS, (LABELS, DIM), mx.cpu())
    ids = np.array([2, 40, 41])
    apply(rule, np.zeros((ROWS, DIM), np.float32), np.zeros((LABELS, DIM), np.float32), ids,
          rng.normal(size=(3, DIM)).astype(np.float32), rng.normal(size=(LABELS, DIM)).astype(np.float32), lr=0.1)
    saved = rule.state_arrays(ids)
    restored = build_optimizer("adagrad", ROWS, (LABELS, DIM), mx.cpu(), 1024)
    restored.load_state_arrays(ids, saved)
    np.testing.assert_array_equal(restored.row_history.asnumpy(), rule.row_history.asnumpy())
    np.testing.assert_array_equal(restored.output.history.asnumpy(), rule.output.history.asnumpy())


def test_summed_sgd_is_plain_sgd_on_the_touched_rows():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    ids, grads = np.array([1, 7]), rng.normal(size=(2, DIM)).astype(np.float32)
    new_weight, _ = apply(SummedSGD(), weight, np.zeros((LABELS, DIM), np.float32), ids, grads,
                          np.zeros((LABELS, DIM), np.float32), lr=0.25)
    expected = weight.copy()
    expected[ids] -= 0.25 * grads
    np.testing.assert_allclose(new_weight, expected, rtol=1e-6)


@pytest.mark.parametrize("mean", [False, True])
def test_cpu_sparse_sgd_step_gives_the_bits_of_mxnets_operators(mean):
    """The compiled CPU loop, and the operator path of other devices, against take, (divide by the
    counts ** exponent,) scale, subtract and index_copy, on values of every magnitude."""
    rng = np.random.default_rng(5)
    weight = (rng.normal(size=(ROWS, DIM)) * 10.0 ** rng.integers(-6, 3, size=(ROWS, 1))).astype(np.float32)
    ids = np.sort(rng.choice(ROWS, 300, replace=False)).astype(np.int64)
    grads = (rng.normal(size=(len(ids), DIM + mean)) * 10.0 ** rng.integers(-8, 2, size=(len(ids), 1)))
    if mean:
        grads[:, DIM] = rng.integers(1, 1000, size=len(ids))
    grads = mx.nd.array(grads.astype(np.float32))
    expected, updated, ids_nd = mx.nd.array(weight), mx.nd.array(weight), mx.nd.array(ids, dtype=np.int64)
    by_operators = mx.nd.array(weight)
    exponent = DOCUMENT_EXPONENT if mean else None
    for lr in (0.1, 0.0731234, 3.7e-4, 2.5):
        step = grads[:, :DIM] / grads[:, DIM:] ** DOCUMENT_EXPONENT if mean else grads
        mx.nd.contrib.index_copy(expected, ids_nd, mx.nd.take(expected, ids_nd) - lr * step, out=expected)
        sparse_sgd_step(updated, ids_nd, grads, lr, count_exponent=exponent)
        _subtract_scaled_rows_with_operators(by_operators, ids_nd, grads, exponent, lr)  # other devices' path
    assert not np.array_equal(expected.asnumpy(), weight)
    np.testing.assert_array_equal(updated.asnumpy(), expected.asnumpy())
    np.testing.assert_array_equal(by_operators.asnumpy(), expected.asnumpy())


def test_row_mean_sgd_divides_a_rows_summed_gradient_by_its_documents_to_the_exponent():
    """A row one document used takes fastText's per-example step; one that 4 documents used, their sum / 4 ** 0.75."""
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    ids, grads, docs = np.array([4, 70]), rng.normal(size=(2, DIM)).astype(np.float32), np.array([1, 4])
    new_weight, _ = apply(RowMeanSGD((LABELS, DIM), mx.cpu()), weight, np.zeros((LABELS, DIM), np.float32), ids,
                          grads, np.zeros((LABELS, DIM), np.float32), lr=0.5, doc_counts=docs)
    expected = weight.copy()
    expected[ids] -= 0.5 * grads / docs[:, None] ** DOCUMENT_EXPONENT
    np.testing.assert_allclose(new_weight, expected, rtol=1e-6)


def test_row_mean_sgd_step_grows_slowly_with_the_batch_and_output_takes_adagrad():
    """1,000 documents with one gradient move a row 1,000 ** 0.25 times as far as one document does
    (the sum would be 1,000 times), and the output matrix as far."""
    grads, output_grad = np.full((1, DIM), 0.01, np.float32), np.full((LABELS, DIM), 0.02, np.float32)
    moved = []
    for docs in (1, 1000):
        weight, output = apply(RowMeanSGD((LABELS, DIM), mx.cpu()), np.zeros((ROWS, DIM), np.float32),
                               np.zeros((LABELS, DIM), np.float32), np.array([5]), docs * grads, docs * output_grad,
                               lr=0.5, doc_counts=[docs])
        moved.append((weight[5], output))
    np.testing.assert_allclose(moved[0][0], -0.005, rtol=1e-5)
    np.testing.assert_allclose(moved[1][0], moved[0][0] * 1000 ** (1 - DOCUMENT_EXPONENT), rtol=1e-5)
    np.testing.assert_allclose(moved[0][1], moved[1][1], rtol=1e-5)
    np.testing.assert_allclose(moved[0][1], -0.5, rtol=1e-5)  # Adagrad's first step: lr x sign


def test_row_mean_sgd_sends_counts_as_one_more_column_even_for_an_empty_share():
    rule = RowMeanSGD((LABELS, DIM), mx.cpu())
    message = rule.row_message(np.array([2, 1, 7]), DIM, mx.cpu())
    assert message.shape == (3, DIM + 1)
    np.testing.assert_array_equal(message.asnumpy()[:, DIM], [2, 1, 7])
    assert rule.row_message(np.zeros(0, np.int64), DIM, mx.cpu()).shape == (0, DIM + 1)


def test_row_mean_sgd_state_is_the_output_history_and_round_trips():
    rng = np.random.default_rng(4)
    rule = RowMeanSGD((LABELS, DIM), mx.cpu())
    apply(rule, np.zeros((ROWS, DIM), np.float32), np.zeros((LABELS, DIM), np.float32), np.array([9]),
          rng.normal(size=(1, DIM)).astype(np.float32), rng.normal(size=(LABELS, DIM)).astype(np.float32), lr=0.1)
    saved = rule.state_arrays(np.array([9]))
    assert set(saved) == {"output_history"} and np.count_nonzero(saved["output_history"])
    restored = build_optimizer("rowmean", ROWS, (LABELS, DIM), mx.cpu(), 1024)
    restored.load_state_arrays(np.array([9]), saved)
    np.testing.assert_array_equal(restored.output.history.asnumpy(), rule.output.history.asnumpy())


def nesterov_reference(weight, velocity, last_step, step, ids, grads, docs, lr, momentum=MOMENTUM):
    """Lazy Nesterov in numpy (float64): decay a touched row's velocity by the steps since it was last
    touched, add its gradient (sum / documents ** exponent), step by g + momentum x velocity."""
    weight, velocity, last_step = weight.copy(), velocity.copy(), last_step.copy()
    g = grads / np.asarray(docs, np.float64)[:, None] ** DOCUMENT_EXPONENT
    velocity[ids] = momentum ** (step - last_step[ids])[:, None] * velocity[ids] + g
    last_step[ids] = step
    weight[ids] -= lr * (g + momentum * velocity[ids])
    return weight, velocity, last_step


def nesterov_steps(rule, steps, weight, output):
    """`steps` [(ids, grads, docs, output_grad, lr)] of `rule` on numpy arrays; the final weight and output."""
    input_matrix, output_matrix = mx.nd.array(weight), mx.nd.array(output)
    for ids, grads, docs, output_grad, lr in steps:
        rule.apply(input_matrix, mx.nd.array(ids, dtype=np.int64), row_message(rule, grads, docs),
                   output_matrix, mx.nd.array(output_grad), lr)
    return input_matrix.asnumpy(), output_matrix.asnumpy()


def random_steps(seed, count, rows=ROWS):
    """`count` steps touching random sorted rows (row 0 in the first and the last only: a gap)."""
    rng = np.random.default_rng(seed)
    steps = []
    for step in range(count):
        ids = np.sort(rng.choice(np.arange(1, rows), 20, replace=False))
        if step in (0, count - 1):
            ids = np.concatenate([[0], ids])
        steps.append((ids, rng.normal(size=(len(ids), DIM)).astype(np.float32), rng.integers(1, 50, len(ids)),
                      rng.normal(size=(LABELS, DIM)).astype(np.float32), float(rng.uniform(0.1, 2.0))))
    return steps


def test_nesterov_rule_is_lazy_nesterov_on_touched_rows_and_row_mean_sgds_output_adagrad():
    rng = np.random.default_rng(6)
    weight = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    output = rng.normal(size=(LABELS, DIM)).astype(np.float32)
    steps = random_steps(7, 6, rows=60)
    rule = build_optimizer("nesterov", ROWS, (LABELS, DIM), mx.cpu(), 4096)
    new_weight, new_output = nesterov_steps(rule, steps, weight, output)
    expected = weight.astype(np.float64), np.zeros((ROWS, DIM)), np.zeros(ROWS, np.int64)
    for step, (ids, grads, docs, _, lr) in enumerate(steps, start=1):
        expected = nesterov_reference(*expected, step, ids, grads, docs, lr)
    np.testing.assert_allclose(new_weight, expected[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rule.velocity.asnumpy(), expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rule.last_step.asnumpy(), expected[2])
    assert rule.step == 6 and rule.last_step.asnumpy()[0] == 6  # row 0: touched at steps 1 and 6
    np.testing.assert_array_equal(new_weight[60:], weight[60:])  # untouched rows: no move, no velocity
    assert not rule.velocity.asnumpy()[60:].any()
    # The output matrix: row-mean SGD's Adagrad at row-mean SGD's share of the rate.
    row_mean = build_optimizer("rowmean", ROWS, (LABELS, DIM), mx.cpu(), 4096)
    assert rule.output_lr_share == row_mean.output_lr_share < 1
    np.testing.assert_array_equal(new_output, nesterov_steps(row_mean, steps, weight, output)[1])


def test_nesterov_rule_without_momentum_is_row_mean_sgd_bit_for_bit():
    """The gradient a row's velocity takes is row-mean SGD's: sum / documents ** exponent, the same bits."""
    rng = np.random.default_rng(8)
    weight, output = rng.normal(size=(ROWS, DIM)).astype(np.float32), np.zeros((LABELS, DIM), np.float32)
    steps = random_steps(9, 3)
    plain = nesterov_steps(RowMeanNesterov(ROWS, (LABELS, DIM), mx.cpu(), momentum=0.0), steps, weight, output)
    np.testing.assert_array_equal(plain[0], nesterov_steps(RowMeanSGD((LABELS, DIM), mx.cpu()), steps, weight,
                                                           output)[0])


def test_nesterov_operators_give_the_bits_of_the_cpu_loop():
    """The MXNet-operator path (non-CPU devices; run here on the CPU) against the compiled loop."""
    rng = np.random.default_rng(10)
    weight = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    state = [[mx.nd.array(weight), mx.nd.zeros((ROWS, DIM)), mx.nd.zeros(ROWS, dtype=np.int32)] for _ in range(2)]
    for step, (ids, grads, docs, _, lr) in enumerate(random_steps(11, 5), start=1):
        message = mx.nd.array(np.concatenate([grads, docs[:, None]], axis=1).astype(np.float32))
        ids = mx.nd.array(ids, dtype=np.int64)
        nesterov_rows_step(*state[0], ids, message, DOCUMENT_EXPONENT, step, MOMENTUM, lr)
        _nesterov_rows_with_operators(*state[1], ids, message, DOCUMENT_EXPONENT, step, MOMENTUM, lr)
    assert not np.array_equal(state[0][0].asnumpy(), weight)
    for loop, operators in zip(*state):
        np.testing.assert_array_equal(loop.asnumpy(), operators.asnumpy())


def test_nesterov_state_of_touched_rows_and_the_step_count_round_trips_mid_run():
    """Stopped after 3 steps and restored into a fresh rule from the touched rows' state, it continues as
    the unstopped rule does, bit for bit; a step at lr 0 with its rows' state restored changes nothing."""
    weight, output = np.zeros((ROWS, DIM), np.float32), np.zeros((LABELS, DIM), np.float32)
    steps = random_steps(12, 6)
    whole = build_optimizer("nesterov", ROWS, (LABELS, DIM), mx.cpu(), 4096)
    expected = nesterov_steps(whole, steps, weight, output)

    first = build_optimizer("nesterov", ROWS, (LABELS, DIM), mx.cpu(), 4096)
    weight, output = nesterov_steps(first, steps[:3], weight, output)
    touched = np.unique(np.concatenate([ids for ids, *_ in steps[:3]]))
    saved = first.state_arrays(touched)
    assert set(saved) == {"output_history", "row_velocity", "row_last_step", "optimizer_step"}
    assert saved["row_velocity"].shape == (len(touched), DIM) and saved["optimizer_step"].tolist() == [3]
    resumed = build_optimizer("nesterov", ROWS, (LABELS, DIM), mx.cpu(), 4096)
    resumed.load_state_arrays(touched, saved)

    ids, grads, docs, output_grad, _ = steps[3]
    before = resumed.state_arrays(ids)
    unchanged = nesterov_steps(resumed, [(ids, grads, docs, output_grad, 0.0)], weight, output)
    resumed.load_state_arrays(ids, before)
    np.testing.assert_array_equal(unchanged[0], weight)
    assert resumed.step == 3

    for got, want in zip(nesterov_steps(resumed, steps[3:], weight, output), expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(resumed.velocity.asnumpy(), whole.velocity.asnumpy())
    np.testing.assert_array_equal(resumed.last_step.asnumpy(), whole.last_step.asnumpy())


def test_only_the_nesterov_rule_holds_per_row_velocity():
    assert not hasattr(build_optimizer("rowmean", ROWS, (LABELS, DIM), mx.cpu(), 1024), "velocity")
    rule = build_optimizer("nesterov", ROWS, (LABELS, DIM), mx.cpu(), 4096)
    assert rule.velocity.shape == (ROWS, DIM) and rule.velocity.dtype == np.float32
    assert rule.last_step.shape == (ROWS,) and rule.last_step.dtype == np.int32
