"""The sparse exchange gives the update a dense all-reduce of the full gradients would give.

This file is also its own Horovod worker: the test runs it under `horovodrun -np 2`, and
in every rank `worker()` exchanges random sparse gradients (with rows shared between
ranks, and a rank with no rows at all) both ways, in float32 and float16, and compares.
The message codec and the summing are also checked on their own, without Horovod.
"""
import sys

import numpy as np
import pytest
from horovod_jobs import CONTROLLERS, horovodrun_command, run

NUM_ROWS, DIM, LABELS = 1000, 6, 4
TRIALS = 20


def rank_gradients(trial: int, rank: int):
    """This rank's (ids, rows, output gradient, counts): rank 1 has none in trial 0."""
    rng = np.random.default_rng([trial, rank])
    num_rows = 0 if (trial == 0 and rank == 1) else int(rng.integers(1, 300))
    ids = np.sort(rng.choice(NUM_ROWS, num_rows, replace=False)).astype(np.int64)
    rows = rng.normal(size=(num_rows, DIM)).astype(np.float32)
    return ids, rows, rng.normal(size=(LABELS, DIM)).astype(np.float32), rng.integers(0, 5000, size=3)


def worker():
    from fasttext_horovod.distributed.world import init_world
    world = init_world()
    for fp16 in (False, True):
        check_exchange(world, fp16)
    print(f"rank {world.rank}: {TRIALS} exchanges equal the dense all-reduce, in fp32 and fp16", flush=True)


def check_exchange(world, fp16: bool):
    import mxnet as mx

    from fasttext_horovod.distributed.exchange import GradientExchange
    exchange = GradientExchange(world, (NUM_ROWS, DIM), fp16=fp16)
    tolerance = 2e-2 if fp16 else 1e-6
    for trial in range(TRIALS):
        ids, rows, output, counts = rank_gradients(trial, world.rank)
        merged_ids, merged_rows, merged_output, merged_counts = exchange.exchange(
            ids, mx.nd.array(rows), mx.nd.array(output), counts)

        dense = np.zeros((NUM_ROWS, DIM), dtype=np.float32)
        dense[ids] = rows
        dense = world.hvd.allreduce(mx.nd.array(dense), average=False, name="dense").asnumpy()
        dense_output = world.hvd.allreduce(mx.nd.array(output), average=False, name="dense_output").asnumpy()
        dense_counts = world.hvd.allreduce(mx.nd.array(counts, dtype=np.int64), average=False, name="counts")

        union = np.unique(np.concatenate([rank_gradients(trial, r)[0] for r in range(world.size)]))
        np.testing.assert_array_equal(merged_ids, union, err_msg=f"trial {trial}: exchanged row ids")
        np.testing.assert_allclose(merged_rows.asnumpy(), dense[union], atol=tolerance, rtol=tolerance,
                                   err_msg=f"trial {trial}: exchanged rows vs dense all-reduce")
        assert not dense[np.setdiff1d(np.arange(NUM_ROWS), union)].any(), "dense rows outside the union"
        np.testing.assert_allclose(merged_output.asnumpy(), dense_output, atol=tolerance, rtol=tolerance,
                                   err_msg=f"trial {trial}: output gradient")
        np.testing.assert_array_equal(merged_counts, dense_counts.asnumpy(), err_msg=f"trial {trial}: counts")
        wire = 2 if fp16 else 4
        others = [rank_gradients(trial, r)[0] for r in range(world.size) if r != world.rank]
        expected = sum(8 * 4 + len(other) * (4 + DIM * wire) + LABELS * DIM * wire for other in others)
        assert exchange.last.received_bytes == expected, (exchange.last.received_bytes, expected)
        assert exchange.last.dense_allreduce_bytes == (NUM_ROWS + LABELS) * DIM * wire  # 2(N-1)/N = 1 at N=2


@pytest.mark.parametrize("wire, tolerance", [(np.float32, 1e-6), (np.float16, 2e-2)], ids=["fp32", "fp16"])
def test_messages_gathered_from_three_ranks_decode_and_sum_to_the_dense_sums(wire, tolerance):
    """Each rank's side of the exchange without the collective: three ranks' messages (rank 1's
    empty), concatenated as an all-gather returns them, split back and summed like dense arrays."""
    from fasttext_horovod.distributed.exchange import MessageCodec, RankMessage, sum_rows_by_id
    codec = MessageCodec(3, DIM, (LABELS, DIM), wire)
    sent = [RankMessage(counts, ids, rows, output)
            for ids, rows, output, counts in (rank_gradients(0, rank) for rank in range(3))]
    received = codec.decode_all(np.concatenate([codec.encode(message) for message in sent]))
    assert len(received) == 3 and len(received[1].ids) == 0
    for got, expected in zip(received, sent):
        np.testing.assert_array_equal(got.ids, expected.ids)
        np.testing.assert_array_equal(got.counts, expected.counts)
        np.testing.assert_allclose(got.rows, expected.rows, atol=tolerance, rtol=tolerance)
        np.testing.assert_allclose(got.output, expected.output, atol=tolerance, rtol=tolerance)
    dense = np.zeros((NUM_ROWS, DIM), dtype=np.float32)
    for message in sent:
        dense[message.ids] += message.rows
    ids, rows = sum_rows_by_id([(message.ids, message.rows) for message in received])
    np.testing.assert_array_equal(ids, np.unique(np.concatenate([message.ids for message in sent])))
    np.testing.assert_allclose(rows, dense[ids], atol=3 * tolerance, rtol=tolerance)
    if wire == np.float32:  # added in rank order, as the dense sums were: the same bits on every rank
        np.testing.assert_array_equal(rows, dense[ids])


@pytest.mark.horovod
@pytest.mark.slow
@pytest.mark.parametrize("controller", CONTROLLERS)
def test_sparse_exchange_equals_dense_allreduce(controller):
    done = run(horovodrun_command(controller, 2, sys.executable, __file__), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in range(2):
        assert f"rank {rank}: {TRIALS} exchanges equal the dense all-reduce, in fp32 and fp16" in done.stdout, \
            done.stdout


if __name__ == "__main__":
    worker()
