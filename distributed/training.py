"""The training loop: shards -> batches -> model -> gradient exchange -> sparse SGD -> logs.

One loop for every world size: a single process is a world of one whose exchange is the
identity. Read top to bottom, it is fastText's `trainThread` in mini-batches.

N ranks. The global batch is N x --batch-size documents, and the batches depend only on
it (see `BatchStream`), so N ranks with --batch-size B train exactly as one process with
--batch-size N*B. The update rule (fastText's summed SGD for small global batches,
row-mean SGD for large ones: model/optimizers.py) sees the global batch's summed
gradients, so the learning rate needs no scaling with N; every rank learns the step's
global token count from the exchange and applies the same rate.
"""
import math
import os
import signal
import time
from dataclasses import asdict, astuple, dataclass
from typing import Callable, List, Optional

import mxnet as mx
import numpy as np

from fasttext_horovod.data_pipeline.batching import Batch, BatchStream
from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.prefetch import DirectStream, Lookahead, PrefetchingStream
from fasttext_horovod.data_pipeline.readers import detect_format, read_class_names
from fasttext_horovod.data_pipeline.shards import Shard, labelled_file_shard
from fasttext_horovod.data_pipeline.vectors import read_vectors
from fasttext_horovod.model.checkpoint import (
    CheckpointError,
    check_optimizer_state,
    checkpoint_meta,
    load_checkpoint,
    save_checkpoint,
)
from fasttext_horovod.model.fasttext import trains_on_all_labels
from fasttext_horovod.model.inference import (
    CHECKPOINT_FILE,
    TEXT_NORMALIZATION,
    build_model,
    evaluate,
)
from fasttext_horovod.model.optimizers import build_optimizer
from fasttext_horovod.model.step_size import choose_optimizer
from fasttext_horovod.model.tensors import to_device

from .dashboard import Dashboard, FigureDrawer, training_hparams
from .errors import DeadlineReached, NonFiniteLoss, Stopped
from .exchange import GradientExchange
from .progress import ProgressReporter
from .scaling import ScalingMeter, scaling_scalars, summarize, time_single_worker
from .settings import TrainConfig
from .sharding import open_rank_shards, prepare_corpus
from .world import World

BEST_CHECKPOINT_FILE = "best.npz"

# Settings that must match for --resume to continue the same run. The batch size may
# change (so may the number of ranks): the position is carried over in documents.
_RESUME_KEYS = ("lr", "dim", "epoch", "word_ngrams", "bucket", "min_count", "min_count_label", "loss",
                "seed", "num_shards", "valid_fraction", "early_stopping", "patience")


@dataclass
class Progress:
    """Where a run stands; with the seed it fixes every remaining batch (see BatchStream)."""

    epoch: int = 0
    batch: int = 0          # next batch within `epoch`
    tokens: int = 0         # fastText tokens trained on, all ranks together
    step: int = 0


@dataclass
class Validation:
    """Early stopping's memory: the best validation accuracy so far and the epoch that reached it."""

    patience: Optional[int] = None   # epochs without improvement before stopping; None: never stop
    best_accuracy: float = -1.0
    best_epoch: int = 0

    def improved(self, epoch: int, accuracy: float) -> bool:
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            return True
        return False

    def exhausted(self, epoch: int) -> bool:
        return self.patience is not None and epoch - self.best_epoch >= self.patience


def resume_batch(batch: int, saved_global_batch: int, global_batch: int) -> int:
    """Where to resume an epoch when the global batch size changed (another number of ranks).

    The saved run had trained on the epoch's first `batch * saved_global_batch` positions.
    Rounding down trains the few documents of a partial batch again rather than skip them.
    """
    return batch * saved_global_batch // global_batch


class StopRequest:
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
    """One training run. `start_from` (checkpoint-style arrays: input_rows, input_values,
    output_matrix) gives the starting weights instead of fastText's init; `keep_rows` (a
    boolean mask over input rows) trains only those rows, as fastText retrains a pruned model;
    `drawer` draws its confusion figures (see `Dashboard`)."""

    def __init__(self, config: TrainConfig, world: World, start_from: Optional[dict] = None,
                 keep_rows: Optional[np.ndarray] = None, drawer: Optional[FigureDrawer] = None):
        self.config = config
        self.world = world
        # Horovod: pin each rank to its device, GPU `local rank` with --gpu, else the CPU.
        self.ctx = world.device(config.gpu)
        self.checkpoint_path = os.path.join(config.model_dir, CHECKPOINT_FILE)
        self.best_path = os.path.join(config.model_dir, BEST_CHECKPOINT_FILE)
        self.num_classes = len(read_class_names(config.train) or []) or None
        # The nodes' preprocessing ranks read the vectors: their words join the vocabulary.
        self.pretrained = (read_vectors(config.pretrained_vectors, config.dim)
                           if config.pretrained_vectors and world.local_rank == 0 else None)
        # Horovod: one preprocessed corpus, so every rank has the same dictionary and label map.
        self.corpus = prepare_corpus(config.train, config.corpus_settings(), config.cache_dir, self.num_classes, world,
                                     self.pretrained.words if self.pretrained else None)
        self.dictionary = self.corpus.dictionary
        # The corpus directory's name hashes the training bytes and settings: --resume checks it.
        self.corpus_key = os.path.basename(self.corpus.directory)
        self.names = label_names(self.dictionary, config.train)
        # Kept on disk beside the corpus and read a batch at a time by each evaluation.
        self.test_docs = (labelled_file_shard(config.test, self.dictionary, self.num_classes, self.corpus.directory)
                          if config.test and world.is_root else None)
        self.valid_docs = self._validation_documents() if world.is_root else None
        # The loop looks no word up (pretrained vectors rebuild the index once): ~160 MB at Yelp's size.
        self.dictionary.release_word_index()
        # Horovod: the global batch is size x --batch-size documents (the learning rate needs no scaling).
        self.global_batch_size = config.batch_size * world.size
        # Horovod: each rank reads only its own shards. Forked before the matrices exist (see prefetch).
        stream = BatchStream(open_rank_shards(self.corpus, world), self.corpus.docs_per_shard, self.global_batch_size,
                             config.seed, keep_rows, all_labels=trains_on_all_labels(config.loss))
        self.batches = PrefetchingStream(stream) if config.prefetches else DirectStream(stream)
        try:
            self._build(config, world, start_from, drawer)
        except BaseException:
            self.batches.close()
            raise

    def _build(self, config: TrainConfig, world: World, start_from: Optional[dict], drawer: Optional[FigureDrawer]):
        """The model, optimizer, exchange and dashboard, from rank 0's start (fresh, resumed, given or
        pretrained)."""
        self.model = build_model(self.dictionary, config.dim, config.loss, config.seed)
        self.model.initialize(ctx=self.ctx)
        # Rows any update wrote; checkpoints store these, the rest is the seeded init.
        self.touched = np.zeros(self.dictionary.num_input_rows, dtype=bool)
        self.optimizer = build_optimizer(choose_optimizer(config.optimizer, self.global_batch_size),
                                         self.dictionary.num_input_rows, self.model.output_matrix.shape, self.ctx,
                                         self.global_batch_size)
        self.progress = Progress()
        self.validation = Validation(config.patience if config.early_stopping else None)
        if world.is_root:
            if config.resume:
                self._restore()
            elif start_from is not None:
                self._load_weights(start_from)
            elif self.pretrained:
                self._load_pretrained_vectors()
        # Horovod: every rank starts from rank 0's parameters and position.
        world.broadcast_parameters(self.model.collect_params())
        if config.resume:
            self._broadcast_optimizer_state()
        self.progress = Progress(*map(int, world.broadcast(np.array(astuple(self.progress)), name="progress")))
        self.exchange = GradientExchange(world, self.model.input_matrix.shape, config.fp16_allreduce)
        self.total_tokens = config.epoch * sum(self.corpus.tokens_per_shard)
        self.dashboard = Dashboard(config.logdir, world.is_root, drawer)
        self.single_worker_rate = None

    # -- checkpoints -----------------------------------------------------------------------
    def _restore(self):
        """Rank 0 loads the checkpoint; the others receive it by broadcast."""
        arrays, meta = load_checkpoint(self.checkpoint_path)
        saved = {**TrainConfig.defaults(), **meta["config"]}  # settings it lacks: their defaults
        changed = [k for k in _RESUME_KEYS if saved[k] != getattr(self.config, k)]
        if changed:
            raise CheckpointError(f"{self.checkpoint_path}: cannot resume, settings differ: "
                                  + ", ".join(f"--{k.replace('_', '-')} {saved.get(k)} (was) vs "
                                              f"{getattr(self.config, k)}" for k in changed))
        if len(Dictionary.from_arrays(arrays).words) != self.dictionary.nwords:
            raise CheckpointError(f"{self.checkpoint_path}: checkpoint was trained on other data")
        if meta.get("corpus", self.corpus_key) != self.corpus_key:  # an import from fastText records none
            raise CheckpointError(f"{self.checkpoint_path}: checkpoint was trained on other data: its corpus "
                                  f"fingerprint is {meta['corpus']}, --train {self.config.train} gives "
                                  f"{self.corpus_key}")
        saved_optimizer = meta.get("optimizer", "sgd")
        if saved_optimizer != self.optimizer.name:
            raise CheckpointError(f"{self.checkpoint_path}: cannot resume, the checkpoint trained with --optimizer "
                                  f"{saved_optimizer} and this run would use {self.optimizer.name} (global batch "
                                  f"{self.global_batch_size}): give --optimizer {saved_optimizer}")
        rows = arrays["input_rows"]
        check_optimizer_state(self.checkpoint_path, arrays, self.optimizer.state_arrays(rows[:0]), len(rows))
        self._load_weights(arrays)
        self.optimizer.load_state_arrays(rows, arrays)
        self.progress = Progress(**meta["progress"])
        saved_validation = {**asdict(Validation()), **(meta.get("validation") or {})}  # none when imported
        self.validation = Validation(self.validation.patience, saved_validation["best_accuracy"],
                                     saved_validation["best_epoch"])
        if self.progress.batch:  # mid-epoch (an imported checkpoint has no batch size, and no position)
            self.progress.batch = resume_batch(self.progress.batch, saved["batch_size"] * meta["world_size"],
                                               self.global_batch_size)

    def _load_weights(self, arrays: dict):
        self.model.load_state_arrays(arrays)
        self.touched[arrays["input_rows"]] = True

    def _broadcast_optimizer_state(self):
        """Horovod: every rank continues from rank 0's optimizer state for the touched rows."""
        if self.world.size == 1:
            return
        count = int(self.world.broadcast(np.array([self.touched.sum()]), name="optimizer_rows")[0])
        ids = self.world.broadcast(np.flatnonzero(self.touched) if self.world.is_root else np.zeros(count, np.int64),
                                   name="optimizer_row_ids")
        state = {key: self.world.broadcast(value, name=f"optimizer_{key}")
                 for key, value in self.optimizer.state_arrays(ids).items()}
        self.optimizer.load_state_arrays(ids, state)

    def _load_pretrained_vectors(self):
        """fastText's `-pretrainedVectors`: each vocabulary word found in the file starts from its vector."""
        ids = np.array([self.dictionary.word_id(word) for word in self.pretrained.words], dtype=np.int64)
        # A word listed twice keeps its last vector, as fastText's row-by-row copy does.
        last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]
        last = last[ids[last] >= 0]
        self.model.set_input_rows(ids[last], self.pretrained.vectors[last])
        self.touched[ids[last]] = True

    def _validation_documents(self) -> Optional[Shard]:
        if self.config.valid:
            return labelled_file_shard(self.config.valid, self.dictionary, self.num_classes, self.corpus.directory)
        return self.corpus.validation()

    def _save(self, finished: bool, metrics: Optional[dict] = None, path: Optional[str] = None):
        if not self.world.is_root:
            return
        arrays = {**self.model.state_arrays(self.touched), **self.dictionary.to_arrays()}
        arrays.update(self.optimizer.state_arrays(arrays["input_rows"]))
        meta = checkpoint_meta(asdict(self.config), asdict(self.progress), finished, self.names, self.num_classes,
                               self.world.size,
                               TEXT_NORMALIZATION if detect_format(self.config.train) == "csv" else None,
                               metrics, asdict(self.validation), corpus=self.corpus_key,
                               optimizer=self.optimizer.name)
        save_checkpoint(path or self.checkpoint_path, arrays, meta)

    # -- one step ----------------------------------------------------------------------------
    def _gradients(self, batch: Batch):
        """(summed loss, row message, output gradient) of this rank's share of a step."""
        ctx, model = self.ctx, self.model
        # The rule decides what travels per row beside the gradient (row-mean SGD: document counts);
        # the model writes the gradients into the message's first columns.
        message = self.optimizer.row_message(batch.row_doc_counts, self.config.dim, ctx)
        if not batch.num_docs:  # under Horovod a rank's share of a small global batch can be empty
            return mx.nd.zeros(1, ctx=ctx), message, mx.nd.zeros(model.output_matrix.shape, ctx=ctx)
        return model.gradients(batch, ctx, row_grads=message)

    def _apply(self, row_ids: np.ndarray, row_grads: mx.nd.NDArray, output_grad: mx.nd.NDArray, lr: float):
        self.optimizer.apply(self.model.input_matrix.data(self.ctx), to_device(row_ids, self.ctx), row_grads,
                             self.model.output_matrix.data(self.ctx), output_grad, lr)

    def _step(self, batch: Batch, lr: float, signalled: bool, late: bool, prepare_next: Callable[[], None]):
        """One SGD step; returns (summed loss of this rank's documents,
        global [docs, tokens, ranks signalled, ranks past the deadline]).

        `prepare_next` runs while the exchange is under way: it must not use MXNet.
        """
        loss, row_grads, output_grad = self._gradients(batch)
        # Horovod: sum the step's gradients over ranks, sending only the input rows it touched.
        finish = self.exchange.start(batch.unique_ids, row_grads, output_grad,
                                     np.array([batch.num_docs, batch.num_tokens, signalled, late]))
        if self.world.size > 1:  # alone, the exchange is nothing to overlap with
            prepare_next()
        row_ids, row_grads, output_grad, counts = finish()
        self._apply(row_ids, row_grads, output_grad, lr)
        self.touched[row_ids] = True
        return loss, counts

    def _step_alone(self, batch: Batch):
        """A world-of-one step at learning rate 0: a step's work, the weights and optimizer state unchanged."""
        loss, row_grads, output_grad = self._gradients(batch)
        state = self.optimizer.state_arrays(batch.unique_ids)
        self._apply(batch.unique_ids, row_grads, output_grad, lr=0.0)
        self.optimizer.load_state_arrays(batch.unique_ids, state)
        loss.wait_to_read()

    def _measure_single_worker_rate(self) -> Optional[float]:
        """What scaling efficiency compares with: --baseline-rate, or rank 0 timed alone (see `scaling`)."""
        if self.config.baseline_rate or self.world.size == 1:
            return self.config.baseline_rate
        rate = None
        if self.world.is_root:
            rate = time_single_worker(self._step_alone, self.batches.epoch(self.progress.epoch, self.progress.batch))
        self.world.barrier()  # the other ranks wait here, outside the timed steps
        return rate

    # -- the loop ----------------------------------------------------------------------------
    def train(self, deadline: Optional[float] = None) -> dict:
        """Run the remaining epochs; returns the final metrics (the kept model's test and validation metrics).

        Past `deadline` (a `time.monotonic()` value: an autotune trial's budget) every rank
        stops at the same step with `DeadlineReached`, leaving no checkpoint of its own.
        """
        with self.batches:  # the prefetching process ends with the run, however it ends
            return self._train(deadline)

    def _train(self, deadline: Optional[float]) -> dict:
        config, progress = self.config, self.progress
        self.single_worker_rate = self._measure_single_worker_rate()
        self.dashboard.training_started(asdict(config), self.world.size, self.global_batch_size,
                                        self.single_worker_rate, progress.step)
        reporter = ProgressReporter(config.epoch * self.batches.stream.num_docs, "examples")
        done_before = progress.epoch * self.batches.stream.num_docs + progress.batch * self.global_batch_size
        meter = ScalingMeter()
        train_start = time.perf_counter()
        try:
            kept_metrics = self._run_epochs(deadline, reporter, meter, done_before)
            metrics = self._run_metrics(self._gather(meter.close_run()), time.perf_counter() - train_start)
            self.dashboard.training_finished(training_hparams(config, self.world.size, self.global_batch_size), metrics,
                                             progress.step)
        finally:
            reporter.close()
            self.dashboard.close()  # events of a run ended by a deadline or an error are flushed too
        self._keep_best()
        metrics.update(kept_metrics)
        return metrics

    def _run_epochs(self, deadline, reporter, meter, done_before) -> dict:
        """The epochs left; returns the kept model's metrics (see `_end_epoch`)."""
        config, progress = self.config, self.progress
        kept_metrics = {}
        with StopRequest() as stop:
            while progress.epoch < config.epoch:
                started = time.perf_counter()
                batches = Lookahead(self.batches.epoch(progress.epoch, progress.batch))
                for batch in batches:
                    lr = self.optimizer.learning_rate(config.lr, progress.tokens / self.total_tokens)
                    late = deadline is not None and time.monotonic() > deadline
                    loss, (_, global_tokens, signalled, out_of_time) = self._step(
                        batch, lr, stop.signum is not None, late, prepare_next=batches.fetch_next)
                    meter.add(loss, batch.num_docs, batch.num_tokens, time.perf_counter() - started, self.exchange.last)
                    progress.batch += 1
                    progress.step += 1
                    progress.tokens += int(global_tokens)
                    if progress.step % config.log_every == 0 or signalled or out_of_time:
                        self._log(meter, lr, reporter, done_before)
                    if signalled or out_of_time:  # any rank was signalled or late: all stop at this same step
                        self._stop(bool(signalled))
                    started = time.perf_counter()
                self._log(meter, lr, reporter, done_before)
                progress.epoch += 1
                progress.batch = 0
                epoch_scaling = scaling_scalars(self._gather(meter.close_epoch()), "scaling_per_epoch")
                epoch_metrics, stop_early = self._end_epoch()  # the checkpoint first, then the optional logs
                self.dashboard.scalars(progress.step, epoch_scaling)
                kept_metrics = epoch_metrics or kept_metrics
                if stop_early:
                    break
        return kept_metrics

    def _stop(self, signalled: bool):
        """End the run at this step: a signal leaves a checkpoint to resume from, a deadline does not."""
        where = f"epoch {self.progress.epoch + 1}, batch {self.progress.batch}"
        if not signalled:
            raise DeadlineReached(f"the time budget ran out at {where}")
        self._save(finished=False)
        self.world.barrier()  # no rank exits (and has the launcher stop the job) before the save
        raise Stopped(f"stopped by a signal at {where}; checkpoint saved, continue with --resume")

    def _end_epoch(self):
        """Evaluate, checkpoint, and decide on early stopping.

        Returns (this epoch's metrics if its model is the one kept so far, else None; whether
        to stop). Without --early-stopping the kept model is the latest; with it, the one of
        best validation accuracy, saved aside and moved into place when training ends.
        """
        epoch, step = self.progress.epoch, self.progress.step
        test = self._evaluate(self.test_docs)
        valid = self._evaluate(self.valid_docs)
        metrics = {**(test.as_dict(self.names) if test else {}), "epoch": epoch}
        if valid:
            metrics["valid"] = valid.as_dict(self.names)
        improved = valid is not None and self.validation.improved(epoch, valid.accuracy)
        # Horovod: rank 0 evaluated; every rank follows its decision.
        stop_early = bool(self.world.broadcast(np.array([self.validation.exhausted(epoch)], dtype=np.int64),
                                               name="stop_early")[0])
        finished = epoch == self.config.epoch or stop_early
        if finished or self.config.checkpoint_every_epoch:
            self._save(finished, metrics=metrics)
        if improved and self.config.early_stopping:
            self._save(finished=True, metrics=metrics, path=self.best_path)
        # TensorBoard only after the checkpoint: a failing event write (a full disk) cannot cost the epoch.
        self._log_evaluation(test, "test", step)
        self._log_evaluation(valid, "valid", step)
        self.world.barrier()  # the other ranks wait for rank 0's evaluation here, outside the timed steps
        return (metrics if improved or not self.config.early_stopping else None), stop_early

    def _keep_best(self):
        if self.config.early_stopping and self.world.is_root and os.path.exists(self.best_path):
            os.replace(self.best_path, self.checkpoint_path)

    def _gather(self, totals: np.ndarray) -> dict:
        """Global numbers from every rank's meter totals (see `scaling`)."""
        return summarize(self.world.allgather(totals[None], name="meter_totals"), self.single_worker_rate)

    def _log(self, meter: ScalingMeter, lr: float, reporter: ProgressReporter, done_before: int):
        """Close the log window: gather the ranks' totals, check the loss, write scalars, move the progress bar."""
        if meter.window_empty:
            return
        window = self._gather(meter.close_window())
        self._check_finite(window["loss"])
        self.dashboard.scalars(self.progress.step, {
            "train/loss": window["loss"], "train/learning_rate": lr,
            "train/examples_per_second": window["examples_per_second"],
            "train/tokens_per_second": window["tokens_per_second"], **scaling_scalars(window, "scaling")})
        reporter.update(window["examples"], done_before, loss=window["loss"], lr=lr)

    def _check_finite(self, loss: float):
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss} at epoch {self.progress.epoch + 1}, step {self.progress.step}: "
                                f"lower --lr (now {self.config.lr}) or --batch-size (now {self.config.batch_size} "
                                f"per rank): lr x global batch ({self.config.lr * self.global_batch_size:g}) sets "
                                f"how far a step moves (see model/optimizers.py)")

    def _run_metrics(self, run: dict, seconds: float) -> dict:
        """The metrics JSON's training part: throughput over the training steps and how it scaled."""
        metrics = {"train_seconds": seconds, "world_size": self.world.size,
                   "global_batch_size": self.global_batch_size}
        metrics.update({key: value for key, value in run.items() if key not in ("examples", "loss")})
        return metrics

    def _evaluate(self, docs: Optional[Shard]):
        """Metrics on `docs` (rank 0's test or validation set); None without docs."""
        return None if docs is None else evaluate(self.model, docs, self.config.k, self.ctx)

    def _log_evaluation(self, report, split: str, step: int):
        """An evaluation's metrics and confusion matrix under `split/`."""
        if report is None:
            return
        self.dashboard.scalars(step, {f"{split}/accuracy": report.accuracy, f"{split}/loss": report.loss,
                                      f"{split}/precision_at_{self.config.k}": report.precision_at_k,
                                      f"{split}/recall_at_{self.config.k}": report.recall_at_k})
        self.dashboard.confusion(step, report.confusion, self.names, split)
        self.dashboard.flush()
