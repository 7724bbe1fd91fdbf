"""fastText's `quantize` for our models: a small `.ftz` that `fasttext.load_model` reads.

    model dir -> (cutoff) keep the input rows of largest norm, prune the dictionary to them
              -> (retrain) train the kept rows and the output matrix again
              -> product-quantize the input rows (and, with qout, the output matrix)
              -> a fastText model with a quantized input matrix (written as a `.ftz`)

Each step is fastText's own (`FastText::quantize`, `selectEmbeddings`, `Dictionary::prune`,
`QuantMatrix`), so fastText predicts from the file what we predict from it.
"""
import os
import tempfile
from dataclasses import dataclass, fields, replace
from typing import Optional

import mxnet as mx
import numpy as np

from data_pipeline.errors import InputError
from data_pipeline.readers import EOS
from model.fasttext_binary import FastTextModel, fasttext_file_size
from model.product_quantizer import KSUB, QuantizedMatrix, l2_norm_rows

from .dashboard import Dashboard
from .fasttext_interop import to_fasttext
from .inference import TrainedModel, encode_labelled_file, evaluate
from .training import TrainConfig, Trainer
from .world import World

RETRAIN_LR = 0.05  # `fasttext quantize -retrain` without -lr: fastText's Args default


@dataclass
class QuantizeSettings:
    """fastText's quantize options (`args.cc` qargs), its defaults."""

    cutoff: int = 0                         # keep this many input rows; 0 (or more than there are): all
    dsub: int = 2                           # input columns per byte of code
    qnorm: bool = False                     # quantize each row's norm apart from its direction
    qout: bool = False                      # quantize the output matrix too (needs 256+ labels)
    retrain: Optional[TrainConfig] = None   # after pruning, train on `retrain.train` with these settings


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


def retrain_config(saved: dict, train: str, epoch: Optional[int] = None, lr: Optional[float] = None,
                   **overrides) -> TrainConfig:
    """Settings to retrain a pruned model: the model's own (so the corpus and dictionary are
    rebuilt identically), a fresh run without test, validation or logs, by default the
    model's epoch and fastText's quantize lr (0.05). The training lr would be too high here:
    the run starts from trained weights, and at 0.25 a global batch of 128 documents already
    ends 25 points below where it started on the AG News sample."""
    fresh = dict(train=train, model_dir="", test=None, valid=None, early_stopping=False, pretrained_vectors=None,
                 logdir=None, resume=False, dataset=None, baseline_rate=None, epoch=epoch or saved["epoch"],
                 lr=lr or RETRAIN_LR)
    settings = {**saved, **fresh, **overrides}
    # An older checkpoint may hold settings this version no longer has.
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{key: value for key, value in settings.items() if key in names})


def retrain_rows(trained: TrainedModel, rows: np.ndarray, values: np.ndarray, output: np.ndarray,
                 config: TrainConfig, world: World):
    """fastText's retraining of a pruned model: the kept input `rows` (starting from
    `values`) and the output matrix, trained on documents reduced to the kept rows.

    Returns the trained (values, output). The training file must be the model's own: its
    dictionary is rebuilt and must be the model's, word for word.
    """
    keep = np.zeros(trained.dictionary.num_input_rows, dtype=bool)
    keep[rows] = True
    start = {"input_rows": rows, "input_values": values, "output_matrix": output}
    # Trainer writes its checkpoints to model_dir: a scratch directory here, gone afterwards.
    with tempfile.TemporaryDirectory(prefix="fasttext-retrain-") as model_dir:
        trainer = Trainer(replace(config, model_dir=model_dir), world, start_from=start, keep_rows=keep)
        rebuilt, model = trainer.dictionary, trained.dictionary
        if (rebuilt.words, rebuilt.labels, rebuilt.bucket, rebuilt.word_ngrams) != \
                (model.words, model.labels, model.bucket, model.word_ngrams):
            raise InputError(config.train, "is not the file the model was trained on (its dictionary differs); "
                                           "retrain on the model's own training file")
        trainer.train()
    matrix = trainer.model.input_matrix.data()
    values = mx.nd.take(matrix, mx.nd.array(rows, dtype=np.int64, ctx=matrix.context)).asnumpy()
    return values, trainer.model.output_matrix.data().asnumpy()


def quantize_model(trained: TrainedModel, settings: QuantizeSettings, world: World,
                   model_dir: str) -> Optional[Quantized]:
    """fastText's `FastText::quantize` on our model; every rank joins a retraining, the
    root rank alone quantizes and gets the result (the others get None)."""
    full = to_fasttext(trained)
    matrix, output, args = full.input_matrix, full.output_matrix, full.args
    if settings.qout and len(full.labels) < KSUB:
        raise InputError("--qout", f"quantizing the output matrix needs at least {KSUB} labels; "
                                   f"the model has {len(full.labels)}")
    dictionary = trained.dictionary
    if 0 < settings.cutoff < len(matrix):
        kept = select_embeddings(matrix, dictionary.word_id(EOS), settings.cutoff)
        dictionary, rows = dictionary.pruned(kept)
        matrix = matrix[rows]
        if settings.retrain:
            matrix, output = retrain_rows(trained, rows, matrix, output, settings.retrain, world)
            args = replace(args, epoch=settings.retrain.epoch)
    if len(matrix) < KSUB:
        raise InputError(model_dir, f"the model has {len(matrix)} input rows; quantizing needs at least {KSUB}")
    if not world.is_root:
        return None
    small = FastTextModel(args, dictionary.words, dictionary.word_counts, dictionary.labels,
                          dictionary.label_counts, dictionary.ntokens,
                          QuantizedMatrix.quantize(matrix, settings.dsub, settings.qnorm),
                          QuantizedMatrix.quantize(output, 2, settings.qnorm) if settings.qout else output,
                          dictionary.pruneidx)
    return Quantized(full, small)


def top1_report(model: TrainedModel, test_path: str, num_classes: Optional[int], ctx: mx.Context):
    """`model`'s top-1 report on a labelled file (fastText's `test`)."""
    return evaluate(model.model, encode_labelled_file(test_path, model.dictionary, num_classes), 1, ctx)


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


def log_summary(logdir: str, summary: dict) -> None:
    """The summary's numbers as `quantize/*` scalars and its settings and sizes as an HParams entry."""
    dashboard = Dashboard(logdir, enabled=True)
    numbers = {key: value for key, value in summary.items() if isinstance(value, (int, float))
               and not isinstance(value, bool)}
    dashboard.scalars(0, {f"quantize/{key}": value for key, value in numbers.items()})
    dashboard.hparams({key: summary[key] for key in ("cutoff", "dsub", "qnorm", "qout", "retrain")},
                      {key: numbers[key] for key in ("size_ratio", "accuracy_after") if key in numbers})
    dashboard.close()
