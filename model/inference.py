"""Predicting with a model: encode text with its dictionary, batch it, rank labels.

Training's per-epoch evaluation, `evaluate.py` and `predict.py` all come through here,
so a document is scored identically wherever it is scored.
"""
import os
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator, List, Optional, Sequence

import mxnet as mx
import numpy as np

from fasttext_horovod.data_pipeline.batching import label_matrix, make_batch
from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.normalize import LABEL_PREFIX
from fasttext_horovod.data_pipeline.ragged import gather_rows, offsets_of
from fasttext_horovod.data_pipeline.readers import read_records, tokenize
from fasttext_horovod.model.checkpoint import load_checkpoint
from fasttext_horovod.model.fasttext import FastTextClassifier
from fasttext_horovod.model.metrics import ClassificationReport, classification_report

from .tensors import batch_tensors, to_device

CHECKPOINT_FILE = "checkpoint.npz"
TEXT_NORMALIZATION = "fastText classification-results.sh"
_PREDICT_BATCH = 2048
_ENCODE_CHUNK = 4096  # records of a labelled file encoded at once (see `encode_labelled_file`)


@dataclass
class EncodedDocuments:
    ids: np.ndarray          # flat input rows
    offsets: np.ndarray      # document d has ids[offsets[d]:offsets[d+1]]
    gold: List[List[int]]    # label ids per document (empty when unlabelled)

    def __len__(self):
        return len(self.offsets) - 1


def encode_labelled_file(path: str, dictionary: Dictionary, num_classes: Optional[int] = None) -> EncodedDocuments:
    """A test file's documents; a label the model was not trained on is an error, with its line.

    Encoded `_ENCODE_CHUNK` records at a time: a whole test set's tokens as Python objects
    took 1.3 GB at Yelp's size (38,000 documents) before becoming a few MB of ids.
    """
    gold, ids, lengths = [], [], []
    for chunk in _chunks(read_records(path, num_classes), _ENCODE_CHUNK):
        for record in chunk:
            label_ids = [dictionary.label_id(label) for label in record.labels]
            if -1 in label_ids:
                unknown = record.labels[label_ids.index(-1)][len(LABEL_PREFIX):].decode()
                raise InputError(path, f"class {unknown!r} was not in the training data", record.line)
            gold.append(label_ids)
        chunk_ids, chunk_offsets = dictionary.encode_many([r.words for r in chunk])
        ids.append(chunk_ids)
        lengths.append(np.diff(chunk_offsets))
    if not gold:
        raise InputError(path, "no documents: the file is empty")
    return EncodedDocuments(np.concatenate(ids), offsets_of(np.concatenate(lengths)), gold)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def encode_texts(texts: Iterable[bytes], dictionary: Dictionary) -> EncodedDocuments:
    """Unlabelled lines (already normalised as the training data was)."""
    word_lists = [[t for t in tokenize(text) if not t.startswith(LABEL_PREFIX)] for text in texts]
    ids, offsets = dictionary.encode_many(word_lists)
    return EncodedDocuments(ids, offsets, [[] for _ in word_lists])


def _scorable(docs: EncodedDocuments) -> np.ndarray:
    """Documents with at least one known input row: the only ones fastText scores."""
    return np.flatnonzero(np.diff(docs.offsets) > 0)


def _batches(model: FastTextClassifier, docs: EncodedDocuments, chosen: np.ndarray, ctx: mx.Context):
    """(document indices, bag, gathered rows) for the chosen documents, a device batch at a time."""
    for start in range(0, len(chosen), _PREDICT_BATCH):
        part = chosen[start:start + _PREDICT_BATCH]
        batch = make_batch(*gather_rows(docs.ids, docs.offsets, part), np.zeros(len(part)), 0)
        ids, bag, _ = batch_tensors(batch, ctx)
        yield part, bag, model.gather_rows(ids)


def predict(model: FastTextClassifier, docs: EncodedDocuments, k: int, ctx: mx.Context,
            threshold: float = 0.0) -> List[list]:
    """Per document, up to k (label id, probability) pairs of probability >= threshold, best
    first (k = -1: every label); an empty list where no input row is known."""
    results: List[list] = [[] for _ in range(len(docs))]
    for part, bag, rows in _batches(model, docs, _scorable(docs), ctx):
        for d, ranked in zip(part, model.top_k(bag, rows, k, threshold)):
            results[d] = ranked
    return results


def evaluate(model: FastTextClassifier, docs: EncodedDocuments, k: int, ctx: mx.Context,
             threshold: float = 0.0) -> ClassificationReport:
    """fastText's `test` with k (-1: every label) and threshold, plus the mean loss of the
    documents against their gold label sets. Documents without any known input row are
    skipped, as fastText does."""
    chosen = _scorable(docs)
    ranked, losses = [], []
    for part, bag, rows in _batches(model, docs, chosen, ctx):
        ranked += [[label for label, _ in predictions] for predictions in model.top_k(bag, rows, k, threshold)]
        gold = [docs.gold[d] for d in part]
        label_sets = label_matrix(np.concatenate(gold), np.array([len(g) for g in gold]))
        losses.append(model.document_losses(bag, rows, to_device(label_sets.astype(np.float32), ctx)))
    return classification_report(ranked, [docs.gold[d] for d in chosen],
                                 np.concatenate(losses) if losses else [], model.num_labels, k)


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
