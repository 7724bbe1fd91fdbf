"""Predicting with a model: encode text with its dictionary, batch it, rank labels.

Training's per-epoch evaluation, `evaluate.py` and `predict.py` all come through here,
so a document is scored identically wherever it is scored.
"""
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Union

import mxnet as mx
import numpy as np

from fasttext_horovod.data_pipeline.batching import PageReleases, bag_weights, label_matrix
from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.normalize import LABEL_PREFIX
from fasttext_horovod.data_pipeline.ragged import gather_rows, offsets_of
from fasttext_horovod.data_pipeline.readers import tokenize
from fasttext_horovod.data_pipeline.shards import Shard
from fasttext_horovod.model.checkpoint import load_checkpoint
from fasttext_horovod.model.fasttext import FastTextClassifier
from fasttext_horovod.model.metrics import ClassificationReport, ReportCounts

from .tensors import csr_bag, to_device

CHECKPOINT_FILE = "checkpoint.npz"
TEXT_NORMALIZATION = "fastText classification-results.sh"
_PREDICT_BATCH = 2048


@dataclass
class EncodedDocuments:
    """Documents in memory, with the fields evaluation and prediction read from a `Shard`."""

    ids: np.ndarray            # flat input rows
    offsets: np.ndarray        # document d has ids[offsets[d]:offsets[d+1]]
    label_ids: np.ndarray      # flat gold label ids (none when unlabelled)
    label_offsets: np.ndarray  # document d has label_ids[label_offsets[d]:label_offsets[d+1]]

    def __len__(self):
        return len(self.offsets) - 1

    def release_pages(self):
        """In memory, not mapped: nothing to release (see `Shard.release_pages`)."""


Documents = Union[EncodedDocuments, Shard]


def encode_texts(texts: Iterable[bytes], dictionary: Dictionary) -> EncodedDocuments:
    """Unlabelled lines (already normalised as the training data was)."""
    word_lists = [[t for t in tokenize(text) if not t.startswith(LABEL_PREFIX)] for text in texts]
    ids, offsets = dictionary.encode_many(word_lists)
    return EncodedDocuments(ids, offsets, np.zeros(0, dtype=np.int32), np.zeros(len(word_lists) + 1, dtype=np.int64))


def _scorable(docs: Documents) -> np.ndarray:
    """Documents with at least one known input row: the only ones fastText scores."""
    return np.flatnonzero(np.diff(docs.offsets) > 0)


def _batches(model: FastTextClassifier, docs: Documents, chosen: np.ndarray, ctx: mx.Context):
    """(document indices, bag, gathered rows) for the chosen documents, a device batch at a time;
    the pages of a mapped shard read so far are released as training's are.

    The bag has a column per token and the rows come as the documents use them: a forward
    pass needs no unique rows, and sorting them out (`make_batch`) took 40% of an evaluation.
    The sums are the same, entry for entry in the same order.
    """
    pages = PageReleases([docs])
    for start in range(0, len(chosen), _PREDICT_BATCH):
        part = chosen[start:start + _PREDICT_BATCH]
        rows, lengths = gather_rows(docs.ids, docs.offsets, part)
        bag = csr_bag(bag_weights(lengths), np.arange(len(rows)), offsets_of(lengths), len(rows), ctx)
        yield part, bag, model.gather_rows(to_device(rows.astype(np.int64), ctx))
        pages.read(len(part))
    pages.release()


def predict(model: FastTextClassifier, docs: Documents, k: int, ctx: mx.Context,
            threshold: float = 0.0) -> List[list]:
    """Per document, up to k (label id, probability) pairs of probability >= threshold, best
    first (k = -1: every label); an empty list where no input row is known."""
    results: List[list] = [[] for _ in range(len(docs.offsets) - 1)]
    for part, bag, rows in _batches(model, docs, _scorable(docs), ctx):
        for d, ranked in zip(part, model.top_k(bag, rows, k, threshold)):
            results[d] = ranked
    return results


def evaluate(model: FastTextClassifier, docs: Documents, k: int, ctx: mx.Context,
             threshold: float = 0.0) -> ClassificationReport:
    """fastText's `test` with k (-1: every label) and threshold, plus the mean loss of the
    documents against their gold label sets. Documents without any known input row are
    skipped, as fastText does. Counted a batch at a time: nothing grows with the documents."""
    counts = ReportCounts(model.num_labels)
    for part, bag, rows in _batches(model, docs, _scorable(docs), ctx):
        ranked, _ = model.ranked_labels(bag, rows, k, threshold)
        predicted = ranked >= 0
        labels, num_labels = gather_rows(docs.label_ids, docs.label_offsets, part)
        losses = model.document_losses(bag, rows, to_device(label_matrix(labels, num_labels).astype(np.float32), ctx))
        counts.add((predicted.sum(axis=1), ranked[predicted]), (num_labels, labels.astype(np.int64)), losses)
    return counts.report(k)


@dataclass
class TrainedModel:
    model: FastTextClassifier
    dictionary: Dictionary
    meta: dict

    @property
    def label_names(self) -> Sequence[str]:
        return self.meta["label_names"]

    @property
    def num_classes(self) -> Optional[int]:
        """Classes of a CSV corpus (from its classes.txt), to validate test files against."""
        return self.meta.get("num_classes")

    @property
    def normalises_input(self) -> bool:
        """Whether raw text must be normalised as the training corpus was."""
        return self.meta.get("text_normalization") == TEXT_NORMALIZATION


def build_model(dictionary: Dictionary, dim: int, loss: str, seed: int) -> FastTextClassifier:
    return FastTextClassifier(dictionary.num_input_rows, dim, dictionary.label_counts, loss, seed, prefix="fasttext_")


def load_model_dir(model_dir: str, ctx: mx.Context) -> TrainedModel:
    """The model in `model_dir` (its latest checkpoint), ready to predict."""
    if not os.path.isdir(model_dir):
        raise InputError(model_dir, "no such model directory")
    arrays, meta = load_checkpoint(os.path.join(model_dir, CHECKPOINT_FILE))
    return trained_model_from_arrays(arrays, meta, ctx)


def trained_model_from_arrays(arrays, meta: dict, ctx: mx.Context) -> TrainedModel:
    """The model a checkpoint's arrays and metadata describe, on `ctx`."""
    dictionary = Dictionary.from_arrays(arrays)
    config = meta["config"]
    model = build_model(dictionary, config["dim"], config["loss"], config.get("seed", 0))
    model.initialize(ctx=ctx)
    model.load_state_arrays(arrays)
    return TrainedModel(model, dictionary, meta)
