"""Test and validation files as memory-mapped shards, evaluated a batch at a time."""
import os

import mxnet as mx
import numpy as np
import pytest

from fasttext_horovod.data_pipeline import batching
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.readers import read_records
from fasttext_horovod.data_pipeline.shards import LABELLED_FILE_PREFIX, CorpusSettings, labelled_file_shard, preprocess
from fasttext_horovod.model import inference
from fasttext_horovod.model.inference import EncodedDocuments, build_model, evaluate
from fasttext_horovod.model.metrics import ReportCounts, classification_report, ragged_labels


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_data_dir):
    return preprocess(str(tiny_data_dir / "train.csv"), CorpusSettings(bucket=1000, word_ngrams=2, num_shards=2),
                      str(tmp_path_factory.mktemp("cache")), num_classes=4)


def test_shard_holds_the_files_documents_as_the_dictionary_encodes_them(corpus, tiny_data_dir):
    test = str(tiny_data_dir / "test.csv")
    shard = labelled_file_shard(test, corpus.dictionary, 4)
    records = list(read_records(test, 4))
    ids, offsets = corpus.dictionary.encode_many([r.words for r in records])
    assert shard.num_docs == len(records)
    np.testing.assert_array_equal(shard.ids, ids)
    np.testing.assert_array_equal(shard.offsets, offsets)
    assert [shard.doc_labels(d).tolist() for d in range(shard.num_docs)] == \
        [[corpus.dictionary.label_id(label) for label in r.labels] for r in records]


def test_shard_is_kept_in_the_corpus_directory_and_reused(corpus, tiny_data_dir):
    test = str(tiny_data_dir / "test.csv")
    first = labelled_file_shard(test, corpus.dictionary, 4, corpus.directory)
    (kept,) = [name for name in os.listdir(corpus.directory) if name.startswith(LABELLED_FILE_PREFIX)]
    built = os.stat(os.path.join(corpus.directory, kept)).st_mtime_ns
    again = labelled_file_shard(test, corpus.dictionary, 4, corpus.directory)
    assert os.stat(os.path.join(corpus.directory, kept)).st_mtime_ns == built
    np.testing.assert_array_equal(again.ids, first.ids)


def test_unknown_class_names_its_line_and_leaves_nothing(corpus, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("__label__1 good words\n__label__9 unseen class\n")
    def listing():  # the builders' lock file is created by the first build in the directory
        return sorted(name for name in os.listdir(corpus.directory) if name != ".lock")
    before = listing()
    with pytest.raises(InputError) as error:
        labelled_file_shard(str(bad), corpus.dictionary, None, corpus.directory)
    assert str(error.value) == f"{bad}:2: class '9' was not in the training data"
    assert listing() == before


def test_evaluating_the_shard_in_small_batches_equals_one_batch_in_memory(corpus, tiny_data_dir, monkeypatch):
    shard = labelled_file_shard(str(tiny_data_dir / "test.csv"), corpus.dictionary, 4)
    model = build_model(corpus.dictionary, 5, "softmax", 0)
    model.initialize(ctx=mx.cpu())
    model.output_matrix.set_data(mx.nd.array(np.random.default_rng(0).normal(size=model.output_matrix.shape)))
    in_memory = EncodedDocuments(np.array(shard.ids, dtype=np.int64), shard.offsets, shard.label_ids,
                                 shard.label_offsets)
    whole = evaluate(model, in_memory, 2, mx.cpu())
    monkeypatch.setattr(inference, "_PREDICT_BATCH", 7)
    monkeypatch.setattr(batching, "DOCS_BETWEEN_PAGE_RELEASES", 10)
    batched = evaluate(model, shard, 2, mx.cpu())
    assert batched.num_examples == whole.num_examples == shard.num_docs
    assert (batched.accuracy, batched.precision_at_k, batched.recall_at_k) == \
        (whole.accuracy, whole.precision_at_k, whole.recall_at_k)
    np.testing.assert_array_equal(batched.confusion, whole.confusion)
    assert batched.loss == pytest.approx(whole.loss, rel=1e-6)


def test_report_counts_added_in_parts_equal_the_whole_report():
    ranked, gold, losses = [[0, 2], [1], [], [2]], [[0], [1, 2], [3], [2, 2]], [1.0, 2.0, 3.0, 4.0]
    counts = ReportCounts(4)
    counts.add(ragged_labels(ranked[:1]), ragged_labels(gold[:1]), losses[:1])
    counts.add(ragged_labels(ranked[1:]), ragged_labels(gold[1:]), losses[1:])
    parts, whole = counts.report(-1), classification_report(ranked, gold, losses, 4, -1)
    assert (parts.num_examples, parts.accuracy, parts.precision_at_k, parts.recall_at_k, parts.loss) == \
        (whole.num_examples, whole.accuracy, whole.precision_at_k, whole.recall_at_k, whole.loss)
    np.testing.assert_array_equal(parts.confusion, whole.confusion)
    np.testing.assert_array_equal(parts.per_class_f1, whole.per_class_f1)
