"""Preprocessed shards and the batch stream built on them, on the real ag_news_mini train.csv."""
import mmap
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import AG_NEWS
from fasttext_horovod.data_pipeline.batching import BatchStream, make_batch
from fasttext_horovod.data_pipeline.readers import read_csv_records
from fasttext_horovod.data_pipeline.shards import CorpusSettings, ShardedCorpus, corpus_key, preprocess

TRAIN = str(AG_NEWS / "train.csv")
SETTINGS = CorpusSettings(bucket=100_000, word_ngrams=2, num_shards=4)
GLOBAL_BATCH = 50  # not a multiple of num_shards: shards contribute 13, 13, 12, 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return preprocess(TRAIN, SETTINGS, str(tmp_path_factory.mktemp("cache")), num_classes=4)


@pytest.fixture(scope="module")
def records():
    return list(read_csv_records(TRAIN, num_classes=4))


def all_shards(corpus):
    return {k: corpus.shard(k) for k in range(corpus.num_shards)}


def batch_docs(batch):
    """The batch as a multiset of documents: (target, ((input row, weight), ...)) per CSR row."""
    docs = Counter()
    for d in range(batch.num_docs):
        cells = slice(batch.bag_indptr[d], batch.bag_indptr[d + 1])
        rows = batch.unique_ids[batch.bag_indices[cells]]
        docs[(int(batch.targets[d]), tuple(zip(rows.tolist(), batch.bag_data[cells].tolist())))] += 1
    return docs


def assert_same_batch(a, b):
    for field in ("unique_ids", "bag_data", "bag_indices", "bag_indptr", "targets"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.num_tokens == b.num_tokens


def test_preprocess_reuses_the_cached_corpus_on_a_second_call(tmp_path):
    """Same input and settings: the same directory comes back and nothing is rewritten."""
    first = preprocess(TRAIN, SETTINGS, str(tmp_path), num_classes=4)
    files = sorted(Path(first.directory).iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]
    second = preprocess(TRAIN, SETTINGS, str(tmp_path), num_classes=4)
    assert second.directory == first.directory
    assert sorted(Path(second.directory).iterdir()) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps
    # No staging left behind: the corpus and the builders' lock file (see data_pipeline/staging.py).
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(first.directory), ".lock"])


@pytest.mark.parametrize("change", [{"bucket": 100_001}, {"word_ngrams": 1}, {"num_shards": 3},
                                    {"min_count": 2}, {"min_count_label": 2}])
def test_changing_any_setting_changes_the_corpus_key(change):
    """Every setting is part of the cache key, so a changed setting never reuses stale shards."""
    changed = CorpusSettings(**{**SETTINGS.__dict__, **change})
    assert corpus_key(TRAIN, changed) != corpus_key(TRAIN, SETTINGS)
    assert corpus_key(TRAIN, SETTINGS) == corpus_key(TRAIN, CorpusSettings(**SETTINGS.__dict__))


def test_a_changed_setting_builds_a_new_directory_beside_the_old_one(tmp_path):
    """preprocess with another setting builds elsewhere and leaves the first corpus intact."""
    first = preprocess(TRAIN, SETTINGS, str(tmp_path), num_classes=4)
    other = preprocess(TRAIN, CorpusSettings(**{**SETTINGS.__dict__, "num_shards": 3}), str(tmp_path),
                       num_classes=4)
    assert other.directory != first.directory
    assert other.num_shards == 3 and ShardedCorpus(first.directory).num_shards == 4
    assert sorted(os.listdir(tmp_path)) == sorted([".lock", *(os.path.basename(c.directory) for c in (first, other))])


def test_shard_k_of_n_holds_exactly_the_documents_i_mod_n_equal_k(corpus, records):
    """Document i of the file is document i // n of shard i % n: ids, labels and token count."""
    n = corpus.num_shards
    d = corpus.dictionary
    assert sum(corpus.docs_per_shard) == len(records) == 6000
    assert sum(corpus.tokens_per_shard) == sum(len(r.tokens) for r in records)
    for k in range(n):
        shard = corpus.shard(k)
        mine = records[k::n]
        assert shard.num_docs == len(mine) == corpus.docs_per_shard[k]
        for j, record in enumerate(mine):
            np.testing.assert_array_equal(shard.doc_ids(j), d.encode(record.words))
            assert shard.doc_labels(j).tolist() == [d.label_id(t) for t in record.labels]
            assert shard.num_tokens[j] == len(record.tokens)


def assert_mapped(shard):
    assert isinstance(shard.pages, mmap.mmap) and not shard.ids.flags.owndata and not shard.ids.flags.writeable


def test_released_pages_read_back_the_same_ids(corpus):
    shard = corpus.shard(1)
    before = np.array(shard.ids)
    shard.release_pages()
    np.testing.assert_array_equal(shard.ids, before)


def test_a_shard_is_memory_mapped_and_opens_without_the_other_shards(corpus, tmp_path):
    """shard(k) maps its ids from disk and needs none of the other shards' files."""
    assert_mapped(corpus.shard(0))
    k = 2
    copy = tmp_path / "only-one-shard"
    shutil.copytree(corpus.directory, copy)
    for path in copy.iterdir():
        if path.name.startswith("shard-") and not path.name.startswith(f"shard-{k:05d}."):
            path.unlink()
    assert sorted(p.name for p in copy.glob("shard-*")) == [f"shard-{k:05d}.docs.npz", f"shard-{k:05d}.ids.npy"]
    alone, original = ShardedCorpus(str(copy)).shard(k), corpus.shard(k)
    assert_mapped(alone)
    np.testing.assert_array_equal(alone.ids, original.ids)
    np.testing.assert_array_equal(alone.offsets, original.offsets)
    np.testing.assert_array_equal(alone.label_ids, original.label_ids)


def test_the_same_seed_and_epoch_give_identical_batches(corpus):
    """Two streams (or two passes) with one (seed, epoch) yield the same batches, in order."""
    a = list(BatchStream(all_shards(corpus), corpus.docs_per_shard, GLOBAL_BATCH, seed=7).epoch(1))
    b = list(BatchStream(all_shards(corpus), corpus.docs_per_shard, GLOBAL_BATCH, seed=7).epoch(1))
    assert len(a) == len(b) == -(-6000 // GLOBAL_BATCH)
    for x, y in zip(a, b):
        assert_same_batch(x, y)


def test_another_epoch_or_seed_gives_different_batches(corpus):
    """The permutation depends on the epoch and on the seed."""
    stream = BatchStream(all_shards(corpus), corpus.docs_per_shard, GLOBAL_BATCH, seed=7)
    first = next(stream.epoch(0))
    assert batch_docs(first) != batch_docs(next(stream.epoch(1)))
    other_seed = BatchStream(all_shards(corpus), corpus.docs_per_shard, GLOBAL_BATCH, seed=8)
    assert batch_docs(first) != batch_docs(next(other_seed.epoch(0)))


def test_resuming_at_batch_j_continues_with_the_batches_a_full_epoch_would_give(corpus):
    """epoch(e, start_batch=j) is the tail of epoch(e)."""
    stream = BatchStream(all_shards(corpus), corpus.docs_per_shard, GLOBAL_BATCH, seed=3)
    full = list(stream.epoch(2))
    tail = list(stream.epoch(2, start_batch=37))
    assert len(tail) == len(full) - 37
    for x, y in zip(full[37:], tail):
        assert_same_batch(x, y)


@pytest.mark.parametrize("global_batch", [GLOBAL_BATCH, 64, 3])
def test_two_ranks_each_owning_half_the_shards_together_see_the_one_rank_batch(corpus, global_batch):
    """Per step, the union of the two half-streams' documents is the one-stream batch (world-size invariance)."""
    shards = all_shards(corpus)
    whole = BatchStream(shards, corpus.docs_per_shard, global_batch, seed=11)
    ranks = [BatchStream({k: s for k, s in shards.items() if k % 2 == r}, corpus.docs_per_shard, global_batch,
                         seed=11) for r in (0, 1)]
    assert whole.steps_per_epoch == ranks[0].steps_per_epoch == ranks[1].steps_per_epoch
    one = list(whole.epoch(1))
    halves = [list(rank.epoch(1)) for rank in ranks]
    assert len(one) == len(halves[0]) == len(halves[1]) == whole.steps_per_epoch
    for j, (batch, b0, b1) in enumerate(zip(one, *halves)):
        assert batch.num_docs == min(global_batch, 6000 - j * global_batch) == b0.num_docs + b1.num_docs
        assert batch_docs(batch) == batch_docs(b0) + batch_docs(b1)
        assert batch.num_tokens == b0.num_tokens + b1.num_tokens


@pytest.mark.parametrize("global_batch", [3, 10, GLOBAL_BATCH])
def test_an_epoch_sees_every_document_exactly_once(corpus, global_batch):
    """Whatever the global batch size, an epoch is a permutation of the corpus."""
    (everything,) = BatchStream(all_shards(corpus), corpus.docs_per_shard, 6000, seed=5).epoch(0)
    seen = Counter()
    for batch in BatchStream(all_shards(corpus), corpus.docs_per_shard, global_batch, seed=5).epoch(0):
        seen.update(batch_docs(batch))  # in place: `+=` rescans the whole counter every batch
    assert sum(seen.values()) == 6000 and seen == batch_docs(everything)


def test_make_batch_rows_sum_to_one_and_give_the_dense_bag_mean():
    """The CSR bag matrix times the unique rows equals each document's mean of its rows."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 5)).astype(np.float32)
    docs = [np.array([3, 7, 3, 3]), np.array([39]), np.array([7, 0, 12, 0, 7, 7, 5]), np.array([3, 3])]
    batch = make_batch(np.concatenate(docs), np.array([len(d) for d in docs]), np.array([1, 0, 2, 1]), num_tokens=17)
    assert batch.num_docs == 4 and batch.num_tokens == 17
    assert batch.unique_ids.tolist() == [0, 3, 5, 7, 12, 39]
    bag = np.zeros((len(docs), len(batch.unique_ids)), dtype=np.float32)
    for d in range(len(docs)):
        cells = slice(batch.bag_indptr[d], batch.bag_indptr[d + 1])
        np.add.at(bag[d], batch.bag_indices[cells], batch.bag_data[cells])
    np.testing.assert_allclose(bag.sum(axis=1), 1.0, rtol=1e-6)
    dense = np.stack([table[rows].mean(axis=0) for rows in docs])
    np.testing.assert_allclose(bag @ table[batch.unique_ids], dense, rtol=1e-5, atol=1e-6)
    assert bag[0, 1] == pytest.approx(0.75) and bag[2, 3] == pytest.approx(3 / 7)


def test_make_batch_counts_the_documents_using_each_row_not_its_occurrences():
    """What row-mean SGD divides by: a row used three times in one document counts once."""
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 30, size=n) for n in rng.integers(0, 25, size=40)]
    batch = make_batch(np.concatenate(docs), np.array([len(d) for d in docs]), np.zeros(len(docs)), num_tokens=0)
    expected = [sum(row in d for d in docs) for row in batch.unique_ids]
    assert batch.row_doc_counts.tolist() == expected
    assert batch.unique_ids.tolist() == sorted(set(np.concatenate(docs).tolist()))


@pytest.mark.parametrize("dtype, largest", [(np.int32, 10_100_000), (np.int32, 2**31 - 1), (np.int64, 2**40)])
def test_make_batch_remaps_rows_as_np_unique_does_for_any_row_id(dtype, largest):
    """The compiled radix sort behind `make_batch` against numpy, over three to five of its passes."""
    rng = np.random.default_rng(2)
    lengths = rng.integers(0, 300, size=200)
    common = rng.integers(0, largest, size=50)  # rows many documents share, as frequent words are
    rows = np.where(rng.random(lengths.sum()) < 0.5, rng.choice(common, size=lengths.sum()),
                    rng.integers(0, largest, size=lengths.sum())).astype(dtype)
    batch = make_batch(rows, lengths, np.zeros(len(lengths)), num_tokens=0)
    unique, columns = np.unique(rows, return_inverse=True)
    np.testing.assert_array_equal(batch.unique_ids, unique)
    np.testing.assert_array_equal(batch.bag_indices, columns)
    document = np.repeat(np.arange(len(lengths)), lengths)
    np.testing.assert_array_equal(batch.row_doc_counts, np.bincount(np.unique(columns * len(lengths) + document)
                                                                    // len(lengths), minlength=len(unique)))
