"""Predicting with a model: encode text with its dictionary, batch it, rank labels.

Training's per-epoch evaluation, `evaluate.py` and `predict.py` all come through here,
so a document is scored identically wherever it is scored.
"""
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import mxnet as mx
import numpy as np

from data_pipeline.batching import make_batch
from data_pipeline.dictionary import Dictionary
from data_pipeline.errors import InputError
from data_pipeline.normalize import LABEL_PREFIX
from data_pipeline.ragged import gather_rows
from data_pipeline.readers import read_records, tokenize
from model.checkpoint import load_checkpoint
from model.fasttext import FastTextClassifier
from model.metrics import ClassificationReport, classification_report

from .tensors import batch_tensors

CHECKPOINT_FILE = "checkpoint.npz"
TEXT_NORMALIZATION = "fastText classification-results.sh"
_PREDICT_BATCH = 2048


@dataclass
class EncodedDocuments:
    ids: np.ndarray          # flat input rows
    offsets: np.ndarray      # document d has ids[offsets[d]:offsets[d+1]]
    gold: List[List[int]]    # label ids per document (empty when unlabelled)

    def __len__(self):
        return len(self.offsets) - 1


def encode_labelled_file(path: str, dictionary: Dictionary, num_classes: Optional[int] = None) -> EncodedDocuments:
    """A test file's documents; a label the model was not trained on is an error, with its line."""
    records = list(read_records(path, num_classes))
    if not records:
        raise InputError(path, "no documents: the file is empty")
    gold = []
    for record in records:
        label_ids = [dictionary.label_id(label) for label in record.labels]
        if -1 in label_ids:
            unknown = record.labels[label_ids.index(-1)][len(LABEL_PREFIX):].decode()
            raise InputError(path, f"class {unknown!r} was not in the training data", record.line)
        gold.append(label_ids)
    ids, offsets = dictionary.encode_many([r.words for r in records])
    return EncodedDocuments(ids, offsets, gold)


def encode_texts(texts: Iterable[bytes], dictionary: Dictionary) -> EncodedDocuments:
    """Unlabelled lines (already normalised as the training data was)."""
    word_lists = [[t for t in tokenize(text) if not t.startswith(LABEL_PREFIX)] for text in texts]
    ids, offsets = dictionary.encode_many(word_lists)
    return EncodedDocuments(ids, offsets, [[] for _ in word_lists])


def predict(model: FastTextClassifier, docs: EncodedDocuments, k: int, ctx: mx.Context,
            threshold: float = 0.0) -> List[list]:
    """Top-k (label id, probability) per document; an empty list where no row is known."""
    results: List[list] = [[] for _ in range(len(docs))]
    scorable = [d for d in range(len(docs)) if docs.offsets[d + 1] > docs.offsets[d]]
    for start in range(0, len(scorable), _PREDICT_BATCH):
        chosen = np.array(scorable[start:start + _PREDICT_BATCH])
        batch = make_batch(*gather_rows(docs.ids, docs.offsets, chosen), np.zeros(len(chosen)), 0)
        ids, bag, _ = batch_tensors(batch, ctx)
        rows = model.gather_rows(ids)
        for d, ranked in zip(chosen, model.top_k(bag, rows, k, threshold)):
            results[d] = ranked
    return results


def evaluate(model: FastTextClassifier, docs: EncodedDocuments, k: int, ctx: mx.Context) -> ClassificationReport:
    """fastText's `test`: documents without any known input row are skipped, as fastText does."""
    ranked = predict(model, docs, k, ctx)
    kept = [d for d in range(len(docs)) if docs.offsets[d + 1] > docs.offsets[d]]
    return classification_report([[label for label, _ in ranked[d]] for d in kept],
                                 [docs.gold[d] for d in kept], model.num_labels, k)


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
    model = build_model(dictionary, config["dim"], config["loss"], config["seed"])
    model.initialize(ctx=ctx)
    model.load_state_arrays(arrays)
    return TrainedModel(model, dictionary, meta)
