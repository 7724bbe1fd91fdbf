"""Batches prefetched by a forked process: same batches, same order, errors where they happen,
no process left behind."""
import os
import signal

import numpy as np
import pytest

from fasttext_horovod.data_pipeline.batching import BatchStream
from fasttext_horovod.data_pipeline.prefetch import Lookahead, PrefetchingStream, ProducerDied
from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess
from fasttext_horovod.distributed.settings import TrainConfig
from fasttext_horovod.distributed.training import Trainer
from fasttext_horovod.distributed.world import World
from fasttext_horovod.model.checkpoint import load_checkpoint
from test_shards_and_batches import TRAIN, all_shards, assert_same_batch


class CountingStream:
    """A stream of integers: epoch e yields e*100 + j for j in [start, 10); `fail_at` raises there."""

    def __init__(self, fail_at=None, error=None):
        self.fail_at, self.error = fail_at, error

    def epoch(self, epoch, start_batch=0):
        for j in range(start_batch, 10):
            if j == self.fail_at:
                raise self.error
            yield epoch * 100 + j

    def largest_batch_bytes(self):
        return 0  # no arrays: every item travels through the queue


def batch_bytes(batch):
    return sum(array.nbytes for array in (batch.unique_ids, batch.bag_data, batch.bag_indices, batch.bag_indptr,
                                          batch.targets, batch.row_doc_counts))


def test_every_epoch_gives_the_streams_batches_in_order(tmp_path):
    corpus = preprocess(TRAIN, CorpusSettings(bucket=100_000, word_ngrams=2, num_shards=4), str(tmp_path), 4)
    stream = BatchStream(all_shards(corpus), corpus.docs_per_shard, 50, seed=3)
    with PrefetchingStream(stream, depth=2) as batches:
        for epoch, start in ((0, 0), (1, 0), (1, 3)):
            ahead, direct = list(batches.epoch(epoch, start)), list(stream.epoch(epoch, start))
            assert len(ahead) == len(direct) == stream.steps_per_epoch - start
            for a, b in zip(ahead, direct):
                assert_same_batch(a, b)


@pytest.mark.parametrize("all_labels", [False, True])
def test_no_batch_outgrows_the_streams_bound(tmp_path, all_labels):
    """The prefetching process's shared slots are sized by `largest_batch_bytes`."""
    corpus = preprocess(TRAIN, CorpusSettings(bucket=100_000, word_ngrams=2, num_shards=4), str(tmp_path), 4)
    for batch_size in (1, 50, 10_000):
        stream = BatchStream(all_shards(corpus), corpus.docs_per_shard, batch_size, seed=3, all_labels=all_labels)
        largest = max(batch_bytes(batch) for batch in stream.epoch(0))
        assert largest <= stream.largest_batch_bytes() <= 40 * largest


def test_batches_too_large_for_a_slot_travel_whole_in_the_same_order(tmp_path):
    """Slots sized so that only some batches fit: those go through shared memory, the others
    through the queue, and the consumer gets the stream's batches either way."""
    corpus = preprocess(TRAIN, CorpusSettings(bucket=100_000, word_ngrams=2, num_shards=4), str(tmp_path), 4)

    class SmallSlots(BatchStream):
        def largest_batch_bytes(self):
            return int(np.median([batch_bytes(batch) for batch in self.epoch(0)]))

    stream = SmallSlots(all_shards(corpus), corpus.docs_per_shard, 50, seed=3)
    with PrefetchingStream(stream, depth=2) as batches:
        for a, b in zip(batches.epoch(0), stream.epoch(0), strict=True):
            assert_same_batch(a, b)
            assert a.bag_data.flags.writeable


def test_an_error_while_producing_is_raised_after_the_items_before_it_and_the_next_epoch_still_runs():
    with PrefetchingStream(CountingStream(fail_at=4, error=ValueError("bad shard")), depth=2) as batches:
        seen = []
        with pytest.raises(ValueError, match="bad shard"):
            for item in batches.epoch(0):
                seen.append(item)
        assert seen == [0, 1, 2, 3]
        next_epoch = batches.epoch(2, 1)
        assert [next(next_epoch) for _ in range(3)] == [201, 202, 203]
    next_epoch.close()  # dropped after the stream closed: nothing left to cancel, nothing raised


def test_an_exception_that_cannot_be_pickled_still_arrives_with_its_message():
    class Unpicklable(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a} and {b}")
    with PrefetchingStream(CountingStream(fail_at=0, error=Unpicklable("x", "y"))) as batches:
        with pytest.raises(RuntimeError, match="Unpicklable: x and y"):
            list(batches.epoch(0))


def test_leaving_an_epoch_early_cancels_its_rest_and_the_next_epoch_starts_clean():
    with PrefetchingStream(CountingStream(), depth=2) as batches:
        for item in batches.epoch(0):
            if item == 2:
                break
        assert list(batches.epoch(1)) == [100 + j for j in range(10)]


def test_an_epoch_left_unfinished_and_still_referenced_does_not_leak_into_the_next():
    with PrefetchingStream(CountingStream(), depth=2) as batches:
        first = batches.epoch(0)
        assert next(first) == 0  # then kept, neither finished nor closed
        assert list(batches.epoch(1, 5)) == [105, 106, 107, 108, 109]


def test_a_lookahead_takes_one_item_early_and_gives_every_item_once_in_order():
    taken = []

    def items():
        for j in range(3):
            taken.append(j)
            yield j

    ahead = Lookahead(items())
    assert next(ahead) == 0 and taken == [0]
    ahead.fetch_next()
    ahead.fetch_next()  # one item ahead at most
    assert taken == [0, 1]
    assert list(ahead) == [1, 2]
    ahead.fetch_next()  # past the end: nothing to take, no error
    assert list(ahead) == []


def test_closing_ends_the_process_and_a_killed_producer_is_reported():
    batches = PrefetchingStream(CountingStream())
    pid = batches._process.pid
    batches.close()
    assert not batches._process.is_alive() and batches._process.exitcode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie

    with PrefetchingStream(CountingStream()) as batches:
        os.kill(batches._process.pid, signal.SIGKILL)
        with pytest.raises(ProducerDied, match="ended with code -9"):
            list(batches.epoch(0))


@pytest.mark.slow
def test_training_with_prefetched_batches_gives_the_same_model(tmp_path):
    """The process only moves batch assembly: weights are bit for bit those of assembling in the loop."""
    models = {}
    for prefetch in ("on", "off"):
        config = TrainConfig(train=TRAIN, model_dir=str(tmp_path / prefetch), cache_dir=str(tmp_path / "cache"),
                             epoch=2, bucket=100_000, word_ngrams=2, batch_size=16, prefetch=prefetch)
        Trainer(config, World()).train()
        models[prefetch], _ = load_checkpoint(str(tmp_path / prefetch / "checkpoint.npz"))
    for key in ("input_rows", "input_values", "output_matrix"):
        np.testing.assert_array_equal(models["on"][key], models["off"][key])
