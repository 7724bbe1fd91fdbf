"""The training loop: shards -> batches -> model -> gradient exchange -> sparse SGD -> logs.

One loop for every world size: a single process is a world of one whose exchange is the
identity. Read top to bottom, it is fastText's `trainThread` in mini-batches.
"""
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd

from data_pipeline.batching import Batch, BatchStream
from data_pipeline.dictionary import Dictionary
from data_pipeline.readers import detect_format, read_class_names
from data_pipeline.shards import CorpusSettings, ShardedCorpus, corpus_key, preprocess
from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.sgd import dense_sgd_step, linear_decay_lr, sparse_sgd_step

from .dashboard import Dashboard
from .exchange import GradientExchange
from .inference import CHECKPOINT_FILE, TEXT_NORMALIZATION, build_model, encode_labelled_file, evaluate
from .progress import ProgressReporter
from .sharding import open_rank_shards
from .tensors import batch_tensors, to_device
from .world import World


@dataclass
class TrainConfig:
    """Run settings; names follow fastText's flags."""

    train: str
    model_dir: str
    test: Optional[str] = None
    logdir: Optional[str] = None
    lr: float = 0.1
    dim: int = 100
    epoch: int = 5
    word_ngrams: int = 1
    bucket: int = 2_000_000
    min_count: int = 1
    min_count_label: int = 1
    loss: str = "softmax"
    batch_size: int = 64
    seed: int = 0
    gpu: Optional[int] = None
    k: int = 1
    cache_dir: str = ".fasttext_cache"
    num_shards: int = 8
    fp16_allreduce: bool = False
    log_every: int = 50
    resume: bool = False
    dataset: Optional[str] = None

    def corpus_settings(self) -> CorpusSettings:
        return CorpusSettings(self.min_count, self.min_count_label, self.bucket, self.word_ngrams, self.num_shards)


# Settings that must match for --resume to continue the same run.
_RESUME_KEYS = ("lr", "dim", "epoch", "word_ngrams", "bucket", "min_count", "min_count_label", "loss",
                "batch_size", "seed", "num_shards")


@dataclass
class Progress:
    """Where a run stands; with the seed it fixes every remaining batch (see BatchStream)."""

    epoch: int = 0
    batch: int = 0          # next batch within `epoch`
    tokens: int = 0         # fastText tokens trained on, all ranks together
    step: int = 0


class NonFiniteLoss(Exception):
    pass


class ThroughputMeter:
    """Loss and throughput since the last log point, and totals over the run.

    The loss is summed on the device and read only when a window closes, so logging does
    not force a device sync every step.
    """

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.start = time.perf_counter()
        self.total_examples = self.total_tokens = 0
        self._open()

    def _open(self):
        self.window_start = time.perf_counter()
        self.loss_sum, self.docs, self.global_docs, self.global_tokens = None, 0, 0, 0

    def add(self, loss, batch: Batch, global_docs: int, global_tokens: int):
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.docs += batch.num_docs
        self.global_docs += int(global_docs)
        self.global_tokens += int(global_tokens)

    def close_window(self) -> Optional[dict]:
        """The window's mean loss (this rank's documents) and global rates; None if empty."""
        if self.loss_sum is None:
            return None
        seconds = max(time.perf_counter() - self.window_start, 1e-9)
        window = {"loss": self.loss_sum.asscalar() / max(self.docs, 1), "examples": self.global_docs,
                  "examples_per_second": self.global_docs / seconds,
                  "tokens_per_second": self.global_tokens / seconds}
        self.total_examples += self.global_docs
        self.total_tokens += self.global_tokens
        self._open()
        return window

    def totals(self) -> dict:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        return {"train_seconds": seconds, "examples_per_second": self.total_examples / seconds,
                "tokens_per_second": self.total_tokens / seconds, "world_size": self.world_size}


class _StopRequest:
    """SIGINT/SIGTERM end the run at the next step boundary, with a checkpoint."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def label_names(dictionary, train_path: str) -> List[str]:
    """Display names: `classes.txt` names for CSV class indices, else the label without prefix."""
    classes = read_class_names(train_path)
    names = []
    for label in dictionary.labels:
        name = label.decode("utf-8", "replace").replace("__label__", "", 1)
        names.append(classes[int(name) - 1] if classes and name.isdigit() and int(name) <= len(classes) else name)
    return names


class Trainer:
    def __init__(self, config: TrainConfig, world: World):
        self.config = config
        self.world = world
        self.ctx = world.device(config.gpu)
        self.checkpoint_path = os.path.join(config.model_dir, CHECKPOINT_FILE)
        self.num_classes = len(read_class_names(config.train) or []) or None
        self.corpus = self._prepare_corpus()
        self.dictionary = self.corpus.dictionary
        self.names = label_names(self.dictionary, config.train)
        self.test_docs = (encode_labelled_file(config.test, self.dictionary, self.num_classes)
                          if config.test and world.is_root else None)
        self.model = build_model(self.dictionary, config.dim, config.loss, config.seed)
        self.model.initialize(ctx=self.ctx)
        # Rows any update wrote; checkpoints store these, the rest is the seeded init.
        self.touched = np.zeros(self.dictionary.num_input_rows, dtype=bool)
        self.progress = Progress()
        if config.resume:
            self._restore()
        self._broadcast_parameters()
        self.exchange = GradientExchange(world, self.dictionary.num_input_rows, config.fp16_allreduce)
        # Horovod: each rank reads its shards; the global batch is size x --batch-size.
        self.stream = BatchStream(open_rank_shards(self.corpus, world), self.corpus.docs_per_shard,
                                  config.batch_size * world.size, config.seed)
        self.total_tokens = config.epoch * sum(self.corpus.tokens_per_shard)
        self.dashboard = Dashboard(config.logdir, world.is_root)

    # -- setup ---------------------------------------------------------------------------
    def _prepare_corpus(self) -> ShardedCorpus:
        """Root preprocesses (or reuses the cache); the other ranks wait, then open it."""
        config = self.config
        corpus = None
        if self.world.is_root:
            reporter = ProgressReporter(None, "docs preprocessed")
            corpus = preprocess(config.train, config.corpus_settings(), config.cache_dir, self.num_classes,
                                on_progress=reporter.update)
            reporter.close()
        self._barrier()
        return corpus or ShardedCorpus(os.path.join(config.cache_dir,
                                                    corpus_key(config.train, config.corpus_settings())))

    def _barrier(self):
        if self.world.size > 1:
            self.world.hvd.allreduce(mx.nd.zeros(1), name="barrier").wait_to_read()

    def _broadcast_parameters(self):
        if self.world.size > 1:
            # Horovod: every rank starts from rank 0's parameters.
            self.world.hvd.broadcast_parameters(self.model.collect_params(), root_rank=0)

    def _restore(self):
        arrays, meta = load_checkpoint(self.checkpoint_path)
        saved = meta["config"]
        changed = [k for k in _RESUME_KEYS if saved.get(k) != getattr(self.config, k)]
        if changed:
            raise CheckpointError(f"{self.checkpoint_path}: cannot resume, settings differ: "
                                  + ", ".join(f"--{k.replace('_', '-')} {saved.get(k)} (was) vs "
                                              f"{getattr(self.config, k)}" for k in changed))
        if len(Dictionary.from_arrays(arrays).words) != self.dictionary.nwords:
            raise CheckpointError(f"{self.checkpoint_path}: checkpoint was trained on other data")
        self.model.load_state_arrays(arrays)
        self.touched[arrays["input_rows"]] = True
        self.progress = Progress(**meta["progress"])

    # -- checkpoints -----------------------------------------------------------------------
    def _save(self, finished: bool, metrics: Optional[dict] = None):
        if not self.world.is_root:
            return
        arrays = {**self.model.state_arrays(self.touched), **self.dictionary.to_arrays()}
        meta = {"config": asdict(self.config), "progress": asdict(self.progress), "finished": finished,
                "label_names": self.names, "num_classes": self.num_classes, "world_size": self.world.size,
                "text_normalization": TEXT_NORMALIZATION if detect_format(self.config.train) == "csv" else None,
                "metrics": metrics or {}}
        save_checkpoint(self.checkpoint_path, arrays, meta)

    # -- the loop ----------------------------------------------------------------------------
    def _step(self, batch: Batch, lr: float):
        """One SGD step; returns (summed loss of this rank's documents, global [docs, tokens])."""
        ctx, model = self.ctx, self.model
        ids, bag, targets = batch_tensors(batch, ctx)
        if batch.num_docs:
            rows = model.gather_rows(ids)
            rows.attach_grad(stype="row_sparse")
            with autograd.record():
                loss = model(bag, rows, targets).sum()
            loss.backward()
            # Every batch column is used, so the row-sparse gradient holds all U rows in order.
            row_grads, output_grad = rows.grad.data, model.output_matrix.grad(ctx)
        else:  # under Horovod a rank's share of a small global batch can be empty
            loss = mx.nd.zeros(1, ctx=ctx)
            row_grads, output_grad = mx.nd.zeros((0, self.config.dim), ctx=ctx), model.output_matrix.grad(ctx) * 0
        row_ids, row_grads, output_grad, counts = self.exchange.exchange(
            batch.unique_ids, row_grads, output_grad, np.array([batch.num_docs, batch.num_tokens]))
        if len(row_ids):
            sparse_sgd_step(model.input_matrix.data(ctx), to_device(row_ids, ctx), row_grads, lr)
            self.touched[row_ids] = True
        dense_sgd_step(model.output_matrix.data(ctx), output_grad, lr)
        return loss, counts

    def train(self) -> dict:
        """Run the remaining epochs; returns the final metrics (test metrics if --test)."""
        config, progress, world = self.config, self.progress, self.world
        self.dashboard.settings(asdict(config))
        reporter = ProgressReporter(config.epoch * self.stream.num_docs, "examples", enabled=world.is_root)
        done_before = progress.epoch * self.stream.num_docs + progress.batch * self.stream.global_batch_size
        meter = ThroughputMeter(world.size)
        report = None
        with _StopRequest() as stop:
            while progress.epoch < config.epoch:
                for batch in self.stream.epoch(progress.epoch, progress.batch):
                    lr = linear_decay_lr(config.lr, progress.tokens / self.total_tokens)
                    loss, (global_docs, global_tokens) = self._step(batch, lr)
                    meter.add(loss, batch, global_docs, global_tokens)
                    progress.batch += 1
                    progress.step += 1
                    progress.tokens += int(global_tokens)
                    if progress.step % config.log_every == 0 or stop.signum:
                        self._log(meter, lr, reporter, done_before)
                    if stop.signum:
                        self._save(finished=False)
                        reporter.close()
                        raise KeyboardInterrupt(f"stopped by signal {stop.signum} at epoch {progress.epoch + 1}, "
                                                f"batch {progress.batch}; checkpoint saved, continue with --resume")
                self._log(meter, lr, reporter, done_before)
                progress.epoch += 1
                progress.batch = 0
                report = self._evaluate(progress.step)
                self._save(finished=progress.epoch == config.epoch,
                           metrics=report.as_dict(self.names) if report else None)
        reporter.close()
        metrics = meter.totals()
        if report:
            metrics.update(report.as_dict(self.names))
            self.dashboard.hparams(asdict(config), {"accuracy": report.accuracy})
        self.dashboard.close()
        return metrics

    def _log(self, meter: "ThroughputMeter", lr: float, reporter: ProgressReporter, done_before: int):
        """Close the meter's window: check the loss, write scalars, move the progress bar."""
        window = meter.close_window()
        if window is None:
            return
        if not math.isfinite(window["loss"]):
            raise NonFiniteLoss(f"loss became {window['loss']} at epoch {self.progress.epoch + 1}, "
                                f"step {self.progress.step}: lower --lr (now {self.config.lr})")
        self.dashboard.scalars(self.progress.step, {
            "train/loss": window["loss"], "train/learning_rate": lr,
            "train/examples_per_second": window["examples_per_second"],
            "train/tokens_per_second": window["tokens_per_second"]})
        reporter.update(window["examples"], done_before, loss=window["loss"], lr=lr)

    def _evaluate(self, step: int):
        if self.test_docs is None:
            return None
        report = evaluate(self.model, self.test_docs, self.config.k, self.ctx)
        self.dashboard.scalars(step, {"test/accuracy": report.accuracy,
                                      f"test/precision_at_{self.config.k}": report.precision_at_k,
                                      f"test/recall_at_{self.config.k}": report.recall_at_k})
        self.dashboard.confusion(step, report.confusion, self.names)
        self.dashboard.flush()
        return report
