"""The compiled bag products give the bits of MXNet's sparse `dot`, forward and backward, and the
CPU's gradients are those of the whole block."""
import functools

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from fasttext_horovod.data_pipeline.batching import label_matrix, make_batch
from fasttext_horovod.model.bag_products import bag_times_rows, bag_transpose_times
from fasttext_horovod.model.fasttext import FastTextClassifier
from fasttext_horovod.model.softmax_head import softmax_loss_and_gradients
from fasttext_horovod.model.tensors import batch_tensors


@pytest.mark.parametrize("dim", [1, 10, 100])
def test_bag_products_give_mxnets_bits(dim):
    """Documents that repeat rows, share rows and hold one row; values of many magnitudes."""
    rng = np.random.default_rng(dim)
    lengths = np.concatenate([[1, 200], rng.integers(1, 60, size=62)])
    batch = make_batch(rng.integers(0, 500, size=lengths.sum()), lengths, np.zeros(len(lengths), np.int32), 0)
    matrix = (rng.normal(size=(1000, dim)) * 10.0 ** rng.integers(-4, 3, size=(1000, 1))).astype(np.float32)
    grad = (rng.normal(size=(len(lengths), dim)) * 10.0 ** rng.integers(-6, 1, size=(len(lengths), 1)))
    ids, bag, _ = batch_tensors(batch, mx.cpu())
    rows = mx.nd.take(mx.nd.array(matrix), ids)
    rows.attach_grad(stype="row_sparse")  # as the whole block is differentiated
    with autograd.record():
        hidden = mx.nd.sparse.dot(bag, rows)
    hidden.backward(mx.nd.array(grad.astype(np.float32)))
    ours_hidden = np.full(hidden.shape, np.nan, np.float32)  # every cell must be written
    bag_times_rows(matrix, batch.unique_ids, batch.bag_data, batch.bag_indices, batch.bag_indptr, ours_hidden)
    ours_rows = np.full(rows.shape, np.nan, np.float32)
    bag_transpose_times(batch.bag_data, batch.bag_indices, batch.bag_indptr, grad.astype(np.float32), ours_rows)
    np.testing.assert_array_equal(ours_hidden, hidden.asnumpy())
    np.testing.assert_array_equal(ours_rows, rows.grad.asnumpy())


@pytest.mark.parametrize("loss", ["softmax", "hs", "ova"])
def test_cpu_gradients_are_the_whole_blocks(loss):
    """`gradients` on the CPU (compiled bag products; the compiled softmax layer, or autograd from
    the hidden layer on) against autograd of the whole block from the gathered rows, as other
    devices compute them: bit for bit, except the softmax layer's own float32 order (`softmax_head`)."""
    rng = np.random.default_rng(7)
    model = FastTextClassifier(300, 8, [9, 5, 4, 2, 1], loss, seed=3)
    model.initialize(ctx=mx.cpu())
    model.output_matrix.set_data(mx.nd.array(rng.normal(size=(5, 8)).astype(np.float32)))
    lengths = rng.integers(1, 30, size=40)
    targets = (label_matrix(rng.integers(0, 5, size=80), np.full(40, 2)) if loss == "ova"
               else rng.integers(0, 5, size=40).astype(np.int32))
    batch = make_batch(rng.integers(0, 300, size=lengths.sum()), lengths, targets, 0)
    cpu_loss, cpu_rows, cpu_output = (a.asnumpy() for a in model.gradients(batch, mx.cpu()))
    ids, bag, targets = batch_tensors(batch, mx.cpu())
    rows = model.gather_rows(ids)
    rows.attach_grad(stype="row_sparse")
    with autograd.record():
        block_loss = model(bag, rows, targets)
    block_loss.backward()
    assert np.abs(cpu_rows).max() > 0 and np.abs(cpu_output).max() > 0
    if loss == "softmax":
        compare = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    else:
        compare = np.testing.assert_array_equal
    compare(cpu_loss, block_loss.asnumpy())
    compare(cpu_rows, rows.grad.asnumpy())
    compare(cpu_output, model.output_matrix.grad().asnumpy())
    # Into an update rule's row message: the gradient columns, and its own column left as it was.
    message = mx.nd.full((len(batch.unique_ids), 9), 5.0)
    model.gradients(batch, mx.cpu(), row_grads=message)
    np.testing.assert_array_equal(message.asnumpy()[:, :8], cpu_rows)
    assert (message.asnumpy()[:, 8] == 5.0).all()


def test_softmax_layer_is_finite_where_a_probability_underflows():
    """A gold label scored ~200 below the best: its probability is 0 in float32, its loss is not."""
    hidden = np.array([[10.0, 0.0]], np.float32)
    output = np.array([[20.0, 0.0], [0.0, 0.0]], np.float32)
    hidden_grad, output_grad = np.empty_like(hidden), np.empty_like(output)
    loss = softmax_loss_and_gradients(hidden, output, np.array([1], np.int32), hidden_grad, output_grad)
    assert loss == pytest.approx(200.0)
    np.testing.assert_allclose(hidden_grad, [[20.0, 0.0]])  # (p - 1[gold]) . output = 1 x row 0
    np.testing.assert_allclose(output_grad, [[10.0, 0.0], [-10.0, 0.0]])
