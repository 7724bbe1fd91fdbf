"""Batches prefetched in a background thread: same batches, same order, errors where they happen."""
import threading

import pytest

from fasttext_horovod.data_pipeline.batching import BatchStream
from fasttext_horovod.data_pipeline.prefetch import prefetched
from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess
from test_shards_and_batches import TRAIN, all_shards, assert_same_batch


def test_prefetched_batches_are_the_streams_batches_in_order(tmp_path):
    corpus = preprocess(TRAIN, CorpusSettings(bucket=100_000, word_ngrams=2, num_shards=4), str(tmp_path), 4)
    stream = BatchStream(all_shards(corpus), corpus.docs_per_shard, 50, seed=3)
    direct, ahead = list(stream.epoch(1)), list(prefetched(stream.epoch(1), depth=2))
    assert len(ahead) == len(direct) == stream.steps_per_epoch
    for a, b in zip(ahead, direct):
        assert_same_batch(a, b)


def test_an_error_while_producing_is_raised_after_the_items_before_it():
    def items():
        yield from range(5)
        raise ValueError("bad shard")
    seen = []
    with pytest.raises(ValueError, match="bad shard"):
        for item in prefetched(items(), depth=2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_leaving_the_loop_early_stops_the_producer():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i
    stream = prefetched(items(), depth=3)
    assert [next(stream) for _ in range(2)] == [0, 1]
    stream.close()
    assert not any(t.name == "batch-prefetch" for t in threading.enumerate())
    assert len(produced) <= 2 + 3 + 2  # consumed + queued + one offered and one being made
