"""fastText's `quantize` for our models: a small `.ftz` that `fasttext.load_model` reads.

    model dir -> (cutoff) keep the input rows of largest norm, prune the dictionary to them
              -> (retrain, see distributed/quantize_retrain.py) train the kept rows again
              -> product-quantize the input rows (and, with qout, the output matrix)
              -> a fastText model with a quantized input matrix (written as a `.ftz`)

Each step is fastText's own (`FastText::quantize`, `selectEmbeddings`, `Dictionary::prune`,
`QuantMatrix`), so fastText predicts from the file what we predict from it. Nothing here
trains or talks to other ranks.
"""
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import mxnet as mx
import numpy as np

from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.readers import EOS
from fasttext_horovod.data_pipeline.shards import labelled_file_shard
from fasttext_horovod.model.fasttext_binary import FastTextArgs, FastTextModel, fasttext_file_size
from fasttext_horovod.model.inference import TrainedModel, evaluate
from fasttext_horovod.model.product_quantizer import KSUB, QuantizedMatrix, l2_norm_rows


@dataclass
class QuantizeSettings:
    """fastText's quantize options (`args.cc` qargs), its defaults."""

    cutoff: int = 0                         # keep this many input rows; 0 (or more than there are): all
    dsub: int = 2                           # input columns per byte of code
    qnorm: bool = False                     # quantize each row's norm apart from its direction
    qout: bool = False                      # quantize the output matrix too (needs 256+ labels)


@dataclass
class Quantized:
    full: FastTextModel    # the model before, as export.py writes it (a .bin)
    small: FastTextModel   # the quantized model (a .ftz)


def select_embeddings(matrix: np.ndarray, eos_row: int, cutoff: int) -> np.ndarray:
    """fastText's `selectEmbeddings`: the `cutoff` rows of largest L2 norm, EOS's row first.

    Rows of equal norm come in row order here; fastText's `std::sort` leaves them in an
    order of its own, which only renumbers kept n-gram rows among themselves.
    """
    keys = -l2_norm_rows(matrix).astype(np.float64)
    if eos_row >= 0:
        keys[eos_row] = -np.inf
    return np.argsort(keys, kind="stable")[:cutoff]


def check_quantizable(full: FastTextModel, settings: QuantizeSettings) -> None:
    if settings.qout and len(full.labels) < KSUB:
        raise InputError("--qout", f"quantizing the output matrix needs at least {KSUB} labels; "
                                   f"the model has {len(full.labels)}")


def prune(dictionary: Dictionary, matrix: np.ndarray,
          cutoff: int) -> Tuple[Dictionary, Optional[np.ndarray], np.ndarray]:
    """fastText's `Dictionary::prune` after `selectEmbeddings`: (pruned dictionary, kept rows
    in its order, those rows of `matrix`). When `cutoff` is 0 or keeps every row: the
    dictionary, None and `matrix` itself, uncopied (it can be a 10M-row table)."""
    if not 0 < cutoff < len(matrix):
        return dictionary, None, matrix
    pruned, rows = dictionary.pruned(select_embeddings(matrix, dictionary.word_id(EOS), cutoff))
    return pruned, rows, matrix[rows]


def quantize(dictionary: Dictionary, args: FastTextArgs, matrix: np.ndarray, output: np.ndarray,
             settings: QuantizeSettings, model_dir: str) -> FastTextModel:
    """The `.ftz` model: `matrix` (the kept input rows, in `dictionary`'s order) product-quantized."""
    if len(matrix) < KSUB:
        raise InputError(model_dir, f"the model has {len(matrix)} input rows; quantizing needs at least {KSUB}")
    return FastTextModel(args, dictionary.words, dictionary.word_counts, dictionary.labels,
                         dictionary.label_counts, dictionary.ntokens,
                         QuantizedMatrix.quantize(matrix, settings.dsub, settings.qnorm),
                         QuantizedMatrix.quantize(output, 2, settings.qnorm) if settings.qout else output,
                         dictionary.pruneidx)


def top1_report(model: TrainedModel, test_path: str, num_classes: Optional[int], ctx: mx.Context):
    """`model`'s top-1 report on a labelled file (fastText's `test`)."""
    return evaluate(model.model, labelled_file_shard(test_path, model.dictionary, num_classes), 1, ctx)


def summarize(quantized: Quantized, ftz_path: str, before=None, after=None) -> dict:
    """Sizes (the full model's .bin, the written .ftz), rows, and the test reports' accuracies if given."""
    bin_bytes, ftz_bytes = fasttext_file_size(quantized.full), os.path.getsize(ftz_path)
    summary = {"bin_bytes": bin_bytes, "ftz_bytes": ftz_bytes, "size_ratio": bin_bytes / ftz_bytes,
               "input_rows_before": quantized.full.input_matrix.shape[0],
               "input_rows_after": quantized.small.input_matrix.shape[0]}
    if before and after:
        summary.update(n_test=before.num_examples, accuracy_before=before.accuracy, accuracy_after=after.accuracy,
                       accuracy_drop_points=100 * (before.accuracy - after.accuracy))
    return summary
