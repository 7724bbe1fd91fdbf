"""Update rules: which one a global batch gets, and what row-wise Adagrad writes (and does not)."""
import mxnet as mx
import numpy as np
import pytest

from fasttext_horovod.model.optimizers import RowAdagrad, SummedSGD, build_optimizer, warmup_then_decay_lr
from fasttext_horovod.model.step_size import LARGEST_SGD_GLOBAL_BATCH, choose_optimizer, default_lr

ROWS, DIM, LABELS = 1000, 4, 3


def adagrad_reference(weight, history, ids, grads, lr):
    """Row-wise Adagrad in numpy: a row's history sums the mean of its squared gradient."""
    weight, history = weight.copy(), history.copy()
    history[ids] += (grads ** 2).mean(axis=1, keepdims=True)
    weight[ids] -= lr * grads / np.sqrt(history[ids])
    return weight, history


def apply(rule, weight, output, ids, grads, output_grad, lr):
    input_matrix, output_matrix = mx.nd.array(weight), mx.nd.array(output)
    rule.apply(input_matrix, mx.nd.array(ids, dtype=np.int64), mx.nd.array(grads), output_matrix,
               mx.nd.array(output_grad), lr)
    return input_matrix.asnumpy(), output_matrix.asnumpy()


def test_auto_keeps_fasttext_sgd_for_small_global_batches_and_adagrad_above():
    assert choose_optimizer("auto", LARGEST_SGD_GLOBAL_BATCH) == "sgd"
    assert choose_optimizer("auto", LARGEST_SGD_GLOBAL_BATCH + 1) == "adagrad"
    assert choose_optimizer("sgd", 8192) == "sgd" and choose_optimizer("adagrad", 8) == "adagrad"


def test_default_lr_follows_the_rule():
    assert default_lr("auto", 64) == 0.1 and default_lr("auto", 64, sgd_lr=0.5) == 0.5
    assert default_lr("auto", 1024, sgd_lr=0.5) == default_lr("adagrad", 64) != 0.5


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
    restored = build_optimizer("adagrad", ROWS, (LABELS, DIM), mx.cpu())
    restored.load_state_arrays(ids, saved)
    np.testing.assert_array_equal(restored.row_history.asnumpy(), rule.row_history.asnumpy())
    np.testing.assert_array_equal(restored.output_history.asnumpy(), rule.output_history.asnumpy())


def test_summed_sgd_is_plain_sgd_on_the_touched_rows():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    ids, grads = np.array([1, 7]), rng.normal(size=(2, DIM)).astype(np.float32)
    new_weight, _ = apply(SummedSGD(), weight, np.zeros((LABELS, DIM), np.float32), ids, grads,
                          np.zeros((LABELS, DIM), np.float32), lr=0.25)
    expected = weight.copy()
    expected[ids] -= 0.25 * grads
    np.testing.assert_allclose(new_weight, expected, rtol=1e-6)
