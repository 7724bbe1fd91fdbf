"""`quantize.py` on every rank: prune, retrain the kept rows together, quantize on rank 0.

The quantization itself is in model/quantization.py; what is here trains (fastText's
`-retrain`) and logs.
"""
import tempfile
from dataclasses import fields, replace
from typing import Optional

import mxnet as mx
import numpy as np

from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.model.fasttext_interop import to_fasttext
from fasttext_horovod.model.inference import TrainedModel
from fasttext_horovod.model.quantization import Quantized, QuantizeSettings, check_quantizable, prune, quantize

from .dashboard import Dashboard
from .settings import TrainConfig
from .training import Trainer
from .world import World

RETRAIN_LR = 0.05  # `fasttext quantize -retrain` without -lr: fastText's Args default


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


def quantize_model(trained: TrainedModel, settings: QuantizeSettings, retrain: Optional[TrainConfig], world: World,
                   model_dir: str) -> Optional[Quantized]:
    """fastText's `FastText::quantize` on our model; every rank joins a retraining (given
    `retrain` and a cutoff), the root rank alone quantizes and gets the result (the others get None)."""
    full = to_fasttext(trained)
    check_quantizable(full, settings)
    dictionary, rows, matrix = prune(trained.dictionary, full.input_matrix, settings.cutoff)
    output, args = full.output_matrix, full.args
    if retrain and rows is not None:
        matrix, output = retrain_rows(trained, rows, matrix, output, retrain, world)
        args = replace(args, epoch=retrain.epoch)
    small = quantize(dictionary, args, matrix, output, settings, model_dir)
    return Quantized(full, small) if world.is_root else None


def log_summary(logdir: str, summary: dict) -> None:
    """The summary's numbers as `quantize/*` scalars and its settings and sizes as an HParams entry."""
    dashboard = Dashboard(logdir, enabled=True)
    numbers = {key: value for key, value in summary.items() if isinstance(value, (int, float))
               and not isinstance(value, bool)}
    dashboard.scalars(0, {f"quantize/{key}": value for key, value in numbers.items()})
    dashboard.hparams({key: summary[key] for key in ("cutoff", "dsub", "qnorm", "qout", "retrain")},
                      {"quantize/size_ratio": "size ratio", "quantize/accuracy_after": "accuracy after"})
    dashboard.close()
