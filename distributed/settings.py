"""A training run's settings, defined once: the dataclass is the source of truth, the
command line is generated from it, and the checks run whoever builds one (train.py, autotune,
reproduce.py or a library caller).

Names follow fastText's flags (`--word-ngrams` is `word_ngrams`). Nothing here imports
MXNet, so entry points parse and check settings before MXNet loads.
"""
import argparse
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional, Union, get_args, get_origin

from fasttext_horovod.data_pipeline.datasets import DATASETS
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.shards import CorpusSettings
from fasttext_horovod.model.checkpoint import MAX_WORD_NGRAMS
from fasttext_horovod.model.losses import LOSSES
from fasttext_horovod.model.step_size import DEFAULT_LR, OPTIMIZERS, default_batch_size, default_lr

from .launcher import cores_per_rank, launched_size


def setting(default, help: str, group: str, cli: bool = True, **argparse_options):
    """A dataclass field that also describes its command-line flag (`cli=False`: library only)."""
    return field(default=default, metadata=dict(help=help, group=group, cli=cli, options=argparse_options))


DATA, OUTPUT, FASTTEXT, RUN = "data", "output", "fastText settings", "mini-batches and devices"
PREFETCH_CHOICES = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """Run settings; see `setting` for what each field's metadata means."""

    train: str = setting(MISSING, "training file: Zhang et al. CSV (*.csv) or fastText __label__ lines", DATA)
    model_dir: str = setting(MISSING, "checkpoint and final model go here", OUTPUT, required=True)
    test: Optional[str] = setting(None, "test file, evaluated after every epoch", DATA)
    valid: Optional[str] = setting(None, "validation file, evaluated after every epoch (accuracy, loss)", DATA)
    valid_fraction: float = setting(0.0, "hold out this share of --train (drawn with --seed) as the validation set",
                                    DATA, metavar="F")
    dataset: Optional[str] = setting(None, "a paper dataset under --data-root; sets --train, --test and --lr", DATA,
                                     choices=sorted(DATASETS))
    cache_dir: str = setting(".fasttext_cache", "preprocessed shards, reused across runs", DATA)
    num_shards: int = setting(8, "shards per corpus (>= number of ranks)", DATA)
    logdir: Optional[str] = setting(None, "TensorBoard event directory", OUTPUT)
    resume: bool = setting(False, "continue from the checkpoint in --model-dir", OUTPUT)
    early_stopping: bool = setting(False, "stop when validation accuracy has not improved for --patience epochs; "
                                          "keep the best model", OUTPUT)
    patience: int = setting(2, "epochs without improvement before early stopping", OUTPUT)
    checkpoint_every_epoch: bool = setting(True, "False: only the final (or best) model, for runs never resumed",
                                           OUTPUT, cli=False)
    lr: Optional[float] = setting(None, "learning rate (default: the rule's, see --optimizer; for sgd 0.1, or "
                                        "the dataset's with --dataset)", FASTTEXT)
    dim: int = setting(100, "size of word vectors", FASTTEXT)
    epoch: int = setting(5, "number of epochs", FASTTEXT)
    word_ngrams: int = setting(1, "max length of word n-grams", FASTTEXT)
    bucket: int = setting(2_000_000, "hash buckets for word n-grams", FASTTEXT)
    min_count: int = setting(1, "minimal number of word occurrences", FASTTEXT)
    min_count_label: int = setting(1, "minimal number of label occurrences", FASTTEXT)
    loss: str = setting("softmax", "ova: one-vs-all, an independent sigmoid per label (multi-label data)", FASTTEXT,
                        choices=LOSSES)
    pretrained_vectors: Optional[str] = setting(None, "initialise word rows from a .vec text file (fastText/word2vec) "
                                                      "of the same --dim", FASTTEXT, metavar="FILE.vec")
    k: int = setting(1, "k of precision/recall@k in evaluation", FASTTEXT)
    batch_size: Optional[int] = setting(None, "documents per step per rank (default: the largest fastText's "
                                              "SGD allows at the learning rate, at most 64; see "
                                              "model/optimizers.py)", RUN)
    optimizer: str = setting("auto", "sgd: fastText's (summed gradients, per-example lr); rowmean: fastText's "
                                     "SGD on each row's gradient summed over the k documents using it / k^0.75, "
                                     "Adagrad on the output matrix, for large global batches; adagrad: row-wise "
                                     "Adagrad; nesterov: rowmean with lazy Nesterov momentum 0.9 on the rows; auto: "
                                     "sgd up to 64 documents a step (all ranks together), rowmean up to 4,095, "
                                     "nesterov from 4,096", RUN,
                             choices=OPTIMIZERS)
    seed: int = setting(0, "seeds initialisation, shuffling and held-out draws", RUN)
    gpu: Optional[int] = setting(None, "GPU index for one process (under Horovod: the local rank's GPU)", RUN)
    fp16_allreduce: bool = setting(False, "exchange gradients in float16", RUN)
    prefetch: str = setting("auto", "assemble batches ahead in a separate process: on, off, or auto (on with "
                                    "--gpu or when each rank has 2 cores or more; on a busy machine the process "
                                    "competes with the step: off)", RUN, choices=PREFETCH_CHOICES)
    baseline_rate: Optional[float] = setting(None, "one worker's measured examples/s (bench/scaling.py at np=1) for "
                                                   "scaling/efficiency; default under Horovod: rank 0 measures it",
                                             RUN, metavar="EXAMPLES_PER_S")
    log_every: int = setting(50, "steps between loss/throughput logs", RUN)

    def __post_init__(self):
        """Fill the batch and lr defaults and refuse impossible values, for the command line and library
        callers alike."""
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError("--lr", f"must be a positive number, got {self.lr}")
        dataset_lr = DATASETS[self.dataset].lr if self.dataset else None  # fastText's SGD rate for the dataset
        if self.batch_size is None:
            self.batch_size = default_batch_size(self.lr or dataset_lr or DEFAULT_LR["sgd"], launched_size())
        if self.lr is None:
            self.lr = default_lr(self.optimizer, self.batch_size * launched_size(), dataset_lr)
        if not self.train:
            raise InputError("--train", "give a training file (or --dataset NAME)")
        for name in ("dim", "epoch", "word_ngrams", "bucket", "batch_size", "num_shards", "k", "log_every",
                     "patience"):
            if getattr(self, name) < 1:
                raise InputError(flag(name), f"must be at least 1, got {getattr(self, name)}")
        if self.word_ngrams > MAX_WORD_NGRAMS:
            raise InputError("--word-ngrams", f"at most {MAX_WORD_NGRAMS}, got {self.word_ngrams}")
        if self.bucket >= 2 ** 31:
            raise InputError("--bucket", f"must fit fastText's int32, got {self.bucket}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise InputError("--valid-fraction", f"must be in [0, 1), got {self.valid_fraction}")
        if self.valid and self.valid_fraction:
            raise InputError("--valid", "give --valid or --valid-fraction, not both")
        if self.early_stopping and not (self.valid or self.valid_fraction):
            raise InputError("--early-stopping", "needs a validation set: give --valid FILE or --valid-fraction F")
        if self.baseline_rate is not None and not (math.isfinite(self.baseline_rate) and self.baseline_rate > 0):
            raise InputError("--baseline-rate", f"must be a positive number, got {self.baseline_rate}")
        if self.gpu is not None and self.gpu < 0:
            raise InputError("--gpu", f"must be a GPU index (0 or more), got {self.gpu}")
        if self.num_shards < launched_size():
            raise InputError("--num-shards", f"{self.num_shards} cannot feed {launched_size()} ranks: "
                                             f"give at least one shard per rank")

    @property
    def prefetches(self) -> bool:
        """Whether batches are assembled in a separate process (see `prefetch`). Measured by
        bench/input_pipeline.py on 2 idle cores, Debian: +24% examples/s at 64 documents a step,
        +6% at 1,024; on the same cores under a load of 6, -30%."""
        return self.prefetch == "on" or (self.prefetch == "auto" and (self.gpu is not None or cores_per_rank() >= 2))

    def corpus_settings(self) -> CorpusSettings:
        return CorpusSettings(self.min_count, self.min_count_label, self.bucket, self.word_ngrams, self.num_shards,
                              self.valid_fraction, self.seed if self.valid_fraction else 0)

    @classmethod
    def defaults(cls) -> dict:
        """Every setting that has a default, by name: what a checkpoint that lacks one means."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(annotation):
    """`int` for `int` and `Optional[int]`."""
    if get_origin(annotation) is Union:
        return next(arg for arg in get_args(annotation) if arg is not type(None))
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser) -> dict:
    """One flag per command-line setting of TrainConfig, in its groups; returns the groups by title.

    Every flag defaults to None (booleans to False) so `config_from_args` can tell what the
    user gave from what the dataclass defaults.
    """
    groups = {}
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta["cli"]:
            continue
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kind = _value_type(f.type)
        if kind is bool:
            group.add_argument(flag(f.name), action="store_true", help=meta["help"])
            continue
        shown = "" if f.default in (MISSING, None) else f" (default {f.default})"
        group.add_argument(flag(f.name), type=kind, default=None, help=meta["help"] + shown, **meta["options"])
    return groups


def config_from_args(args: argparse.Namespace, **resolved) -> TrainConfig:
    """The TrainConfig of parsed arguments: the flags given, `resolved` values, the defaults for the rest."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.metadata["cli"] and getattr(args, f.name) is not None and getattr(args, f.name) is not False}
    return TrainConfig(**{**given, **resolved})
