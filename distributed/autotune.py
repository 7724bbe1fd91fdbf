"""fastText's autotune (`src/autotune.cc`): search lr, dim, epoch, word n-grams, bucket and
loss within a time budget, scored on a validation file, and keep the best model.

The search, as fastText runs it:
- Trial 1 trains the settings as given (the defaults, or the user's flags).
- Every later trial perturbs the best settings so far, one Gaussian step per setting: in
  log2 space for lr, dim, epoch and bucket (value x 2^N(0, sigma)), linear for word n-grams
  and the loss index (value + N(0, sigma)), cast back like C++'s `static_cast` (integers
  truncate toward zero) and clamped to fastText's range. Sigma stays at a start value for the
  first quarter of the budget, falls linearly to an end value at three quarters, then stays:
  wide jumps first, local refinement later (`gauss_sigma`).
- Settings given explicitly on the command line are not searched; bucket is searched only
  when the trial has word n-grams (> 1).
- The score is fastText's default metric, f1 on the validation file: 2 P@k R@k / (P@k + R@k)
  with k = --k (fastText's -autotune-predictions). With k = 1 on single-label data every
  document gets one prediction, so P@1 = R@1 = f1 = accuracy.
- The trial running when the budget ends is aborted and does not count; with no finished
  trial the search fails with fastText's "not enough time to train once". A trial whose loss
  diverges is ignored and the search goes on. Ctrl-C (or SIGTERM) ends the search as the
  end of the budget does, keeping the best trial so far.

Where we differ, on purpose:
- loss is searched over softmax, hs and ova (fastText's `ask` always sets softmax): as an
  index into `LOSSES`, stepped like fastText steps its minn index (linear, sigma 4.0 -> 1.4).
- No final retrain with the best settings: training here is a deterministic function of the
  settings and the seed (tested), so the best trial's model is what a retrain would give; it
  is moved into place instead of spending the time again.
- Without word n-grams fastText sets bucket to 0 to save the table; our dictionary allocates
  no bucket rows then anyway, so bucket keeps its best value and every recorded setting stays
  a valid `train.py` flag.
- Draws come from numpy's generator seeded with --seed, not `std::minstd_rand`: the same
  distributions, another sequence.
- A trial whose input matrix would not fit in memory is skipped before allocating it
  (fastText tries and catches `std::bad_alloc`; Linux would rather kill the whole search).
- No quantization (dsub, -autotune-modelsize) or subword (minn, maxn) search: supervised
  models here have no subwords and are not quantized.
- A trial's preprocessing and matrix initialisation cannot be interrupted, only its steps,
  so the last trial may overrun the budget by its setup time (as fastText's abort reaches
  only its training threads).

Under Horovod every rank runs the same loop: rank 0 draws each trial's settings and the time
left and broadcasts them, all ranks train the trial together and stop together, and rank 0
scores, logs and keeps files.
"""
import gc
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from typing import Collection, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.shards import labelled_file_shard
from fasttext_horovod.model.checkpoint import write_json_atomic
from fasttext_horovod.model.inference import CHECKPOINT_FILE, evaluate, load_model_dir
from fasttext_horovod.model.losses import LOSSES

from .dashboard import Dashboard
from .errors import DeadlineReached, NonFiniteLoss, Stopped
from .logs import log
from .settings import TrainConfig
from .training import StopRequest, Trainer
from .world import World

AUTOTUNE_FILE = "autotune.json"
TRIALS_DIR = ".autotune-trials"   # under the model directory: the final rename stays on one filesystem


@dataclass(frozen=True)
class SearchRange:
    """How one setting moves: clamped to [low, high], by a Gaussian step whose sigma goes from
    `start_sigma` to `end_sigma`; a linear step is added, any other multiplies by 2^step."""

    low: float
    high: float
    start_sigma: float
    end_sigma: float
    linear: bool


# fastText's AutotuneStrategy::ask, argument for argument, except `loss` (ours: see above).
SEARCH_SPACE = {
    "epoch": SearchRange(1, 100, 2.8, 2.5, linear=False),
    "lr": SearchRange(0.01, 5.0, 1.9, 1.0, linear=False),
    "dim": SearchRange(1, 1000, 1.4, 0.3, linear=False),
    "word_ngrams": SearchRange(1, 5, 4.3, 2.4, linear=True),
    "bucket": SearchRange(10_000, 10_000_000, 2.0, 1.5, linear=False),
    "loss": SearchRange(0, len(LOSSES) - 1, 4.0, 1.4, linear=True),
}


@dataclass(frozen=True)
class Settings:
    """The searched settings of one trial, under TrainConfig's names."""

    lr: float
    dim: int
    epoch: int
    word_ngrams: int
    bucket: int
    loss: str

    @classmethod
    def of(cls, config: TrainConfig) -> "Settings":
        return cls(config.lr, config.dim, config.epoch, config.word_ngrams, config.bucket, config.loss)

    def to_array(self) -> np.ndarray:
        """For a broadcast: float64 carries the lr and every integer in range exactly."""
        return np.array([self.lr, self.dim, self.epoch, self.word_ngrams, self.bucket, LOSSES.index(self.loss)],
                        dtype=np.float64)

    @classmethod
    def from_array(cls, values: Sequence[float]) -> "Settings":
        lr, dim, epoch, word_ngrams, bucket, loss = values
        return cls(float(lr), int(dim), int(epoch), int(word_ngrams), int(bucket), LOSSES[int(loss)])

    def __str__(self):
        return (f"lr {self.lr:.4g} dim {self.dim} epoch {self.epoch} word-ngrams {self.word_ngrams} "
                f"bucket {self.bucket} loss {self.loss}")


def gauss_sigma(search: SearchRange, t: float) -> float:
    """fastText's `getArgGauss` standard deviation at `t`, the share of the budget used:
    start_sigma until t = 0.25, linearly down to end_sigma at t = 0.75, end_sigma after."""
    return search.start_sigma - (search.start_sigma - search.end_sigma) / 0.5 * min(0.5, max(t - 0.25, 0.0))


def perturb(value, search: SearchRange, t: float, rng: np.random.Generator):
    """fastText's `updateArgGauss`: one Gaussian step from `value`, cast back to the value's
    type (an int truncates toward zero, as `static_cast` does), clamped to the range."""
    step = rng.normal(0.0, gauss_sigma(search, t))
    kind = type(value)
    moved = kind(value + step if search.linear else value * 2.0 ** step)
    return min(max(moved, kind(search.low)), kind(search.high))


class AutotuneStrategy:
    """fastText's `AutotuneStrategy`: which settings to try next, from the best so far and the time used."""

    def __init__(self, start: Settings, fixed: Collection[str], duration: float, seed: int):
        self.best = start
        self.fixed = frozenset(fixed)
        self.duration = duration
        self.rng = np.random.default_rng(seed)
        self.trials = 0

    def ask(self, elapsed: float) -> Settings:
        """Trial 1: the start settings. Later: the best settings with every searched one
        perturbed, drawn in fastText's order (epoch, lr, dim, word n-grams, bucket, loss)."""
        t = min(1.0, elapsed / self.duration)
        self.trials += 1
        if self.trials == 1:
            return self.best
        drawn = {name: self._draw(name, getattr(self.best, name), t) for name in ("epoch", "lr", "dim", "word_ngrams")}
        if drawn["word_ngrams"] > 1:  # the buckets hold word n-grams: without them the table is unused
            drawn["bucket"] = self._draw("bucket", self.best.bucket, t)
        drawn["loss"] = LOSSES[self._draw("loss", LOSSES.index(self.best.loss), t)]
        return replace(self.best, **drawn)

    def update_best(self, settings: Settings):
        """The settings later trials perturb."""
        self.best = settings

    def _draw(self, name: str, value, t: float):
        return value if name in self.fixed else perturb(value, SEARCH_SPACE[name], t, self.rng)


def trial_score(valid: dict, metric: str) -> float:
    """The validation score a trial is ranked by. f1 is fastText's: the harmonic mean of P@k
    and R@k, which is its Meter's 2 x correct / (predicted + gold); 0 when nothing is correct."""
    if metric == "accuracy":
        return valid["accuracy"]
    precision, recall = valid["precision_at_k"], valid["recall_at_k"]
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _available_host_bytes() -> Optional[int]:
    """Linux's estimate of the memory a new allocation can take without swapping; None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None


def input_matrix_fits(num_bytes: int, world: World, gpu: Optional[int]) -> bool:
    """Whether every rank of this node can allocate an input matrix of `num_bytes`.

    Its initial values are drawn on the host and copied into place, so the host needs twice
    the matrix per rank of the node, and a GPU once more.
    """
    ranks_here = world.hvd.local_size() if world.hvd else 1
    host = _available_host_bytes()
    if host is not None and 2 * num_bytes * ranks_here > host:
        return False
    return gpu is None or num_bytes < mx.context.gpu_memory_info(world.device(gpu).device_id)[0]


@dataclass
class Trial:
    """One trial as autotune.json records it."""

    number: int
    settings: Settings
    status: str                    # finished; aborted (budget over); interrupted; diverged; too large (not run)
    seconds: float = 0.0
    valid: Optional[dict] = None   # the validation metrics of a finished trial (rank 0)
    score: Optional[float] = None

    def as_dict(self) -> dict:
        return {"trial": self.number, "settings": asdict(self.settings), "status": self.status,
                "seconds": round(self.seconds, 3), "score": self.score, "valid": self.valid}


def validation_summary(valid: dict) -> dict:
    """The validation numbers worth keeping per trial: f1, accuracy, P@k, R@k, loss, N."""
    kept = {key: valid[key] for key in ("accuracy", "precision_at_k", "recall_at_k", "loss", "k", "n_test")}
    return {"f1": trial_score(valid, "f1"), **kept}


class Autotune:
    """The search: every trial a Trainer run in its own scratch directory under the model
    directory; at the end the best trial's checkpoint is renamed into place and
    `autotune.json` written beside it. If the search fails, nothing is left behind."""

    def __init__(self, config: TrainConfig, world: World, validation: str, duration: float, metric: str = "f1",
                 fixed: Collection[str] = ()):
        self.config = config
        self.world = world
        self.validation = validation
        self.duration = duration
        self.metric = metric
        self.fixed = sorted(set(fixed) & set(SEARCH_SPACE))
        self.batch_size_given = "batch_size" in fixed
        self.strategy = AutotuneStrategy(Settings.of(config), self.fixed, duration, config.seed)
        self.scratch = os.path.join(config.model_dir, TRIALS_DIR)
        self.trials: List[Trial] = []
        self.best: Optional[Trial] = None
        self.nwords = None         # the vocabulary size (trial 1's; no searched setting changes it)
        self.stop = StopRequest()  # a Trainer handles a signal while it trains; this one, between trainings
        self.dashboard = Dashboard(self._logdir("autotune"), world.is_root)

    # -- the loop, on every rank --------------------------------------------------------------
    def run(self) -> dict:
        """Search until the budget ends; returns what autotune.json holds (rank 0; {} elsewhere).

        Raises InputError when no trial finished in time.
        """
        model_dir_existed = os.path.isdir(self.config.model_dir)
        if self.fixed:  # as fastText warns
            log.info(f"autotune: {', '.join('--' + name.replace('_', '-') for name in self.fixed)} "
                     "given explicitly, not searched")
        try:
            with self.stop:
                start = time.monotonic()
                self._search(start)
                if not any(trial.status == "finished" for trial in self.trials):
                    raise InputError(f"--autotune-duration {self.duration:g}",
                                     "not enough time to train once: give the search more seconds")
                return self._finish(time.monotonic() - start) if self.world.is_root else {}
        except BaseException:
            if self.world.is_root and not model_dir_existed:
                shutil.rmtree(self.config.model_dir, ignore_errors=True)
            raise
        finally:
            if self.world.is_root:
                shutil.rmtree(self.scratch, ignore_errors=True)
            self.dashboard.close()

    def _search(self, start: float):
        while True:
            chosen = self._next_trial(start)
            if chosen is None:
                return
            number, settings, seconds_left = chosen
            trial = self._run_trial(number, settings, time.monotonic() + seconds_left)
            gc.collect()  # a Trainer holds reference cycles: free its input matrix before the next one is made
            self.trials.append(trial)
            if self.world.is_root:
                self._keep_if_best(trial)
                self._log(trial, time.monotonic() - start)
            if trial.status in ("aborted", "interrupted"):
                return

    def _next_trial(self, start: float) -> Optional[Tuple[int, Settings, float]]:
        """Rank 0's next trial (number, settings, seconds left) on every rank; None once the budget is spent."""
        message = self._choose(start) if self.world.is_root else np.zeros(8)
        # Horovod: every rank trains the trial rank 0 chose, against rank 0's clock.
        seconds_left, number, *settings = self.world.broadcast(message, name="autotune_trial").tolist()
        if seconds_left <= 0:
            return None
        return int(number), Settings.from_array(settings), seconds_left

    def _choose(self, start: float) -> np.ndarray:
        """Rank 0: [seconds left, trial number, settings...] of the next trial that fits in memory, or zeros."""
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= self.duration or self.stop.signum is not None:
                return np.zeros(8)
            number, settings = len(self.trials) + 1, self.strategy.ask(elapsed)
            if self._fits(settings):
                return np.concatenate([[self.duration - elapsed, number], settings.to_array()])
            self.trials.append(Trial(number, settings, "too large"))

    def _fits(self, settings: Settings) -> bool:
        if self.nwords is None:  # trial 1: the settings as given, tried as a plain run would
            return True
        # Dictionary.num_input_rows: the words, then the buckets only when there are word n-grams.
        rows = self.nwords + (settings.bucket if settings.word_ngrams > 1 else 0)
        return input_matrix_fits(rows * settings.dim * np.dtype(np.float32).itemsize, self.world, self.config.gpu)

    def _run_trial(self, number: int, settings: Settings, deadline: float) -> Trial:
        """Train one trial on every rank; its outcome, scored on rank 0."""
        started = time.monotonic()
        trainer = Trainer(self._trial_config(number, settings), self.world, drawer=self.dashboard.drawer)
        if self.nwords is None:
            self.nwords = trainer.dictionary.nwords
            self._check_test_file(trainer)
        signalled_before = self.stop.signum is not None  # while this rank prepared the trial
        try:
            valid = trainer.train(-math.inf if signalled_before else deadline).get("valid")
            status = "finished"
        except DeadlineReached:   # every rank stops at the same step, so every rank gets here
            status = "interrupted" if signalled_before else "aborted"
        except NonFiniteLoss:     # likewise: the loss is checked after a gather
            status = "diverged"
        except Stopped:  # a signal: all ranks stopped at the same step
            status = "interrupted"
        trial = Trial(number, settings, status, time.monotonic() - started)
        if status == "finished" and self.world.is_root:
            trial.valid = validation_summary(valid)
            trial.score = trial_score(valid, self.metric)
        return trial

    def _trial_config(self, number: int, settings: Settings) -> TrainConfig:
        """The run's config with the trial's settings, scored on the validation file; the
        test file is kept for the final model."""
        # Unless --batch-size was given, each trial's lr gets its own stable batch, as a run at that lr would.
        batch_size = self.config.batch_size if self.batch_size_given else None
        # The searched rates are fastText's, and the default batch is SGD's: --optimizer auto means SGD then.
        optimizer = "sgd" if self.config.optimizer == "auto" and not self.batch_size_given else self.config.optimizer
        return replace(self.config, **asdict(settings), batch_size=batch_size, optimizer=optimizer,
                       model_dir=self._trial_dir(number),
                       logdir=self._logdir(f"trial-{number:03d}"), valid=self.validation, test=None,
                       checkpoint_every_epoch=False)  # a trial is never resumed: only its final model

    def _check_test_file(self, trainer: Trainer):
        """Rank 0 reads --test once up front, so a bad test file fails before the search, not after."""
        if self.config.test and self.world.is_root:
            labelled_file_shard(self.config.test, trainer.dictionary, trainer.num_classes, trainer.corpus.directory)

    def _trial_dir(self, number: int) -> str:
        return os.path.join(self.scratch, f"trial-{number:03d}")

    def _logdir(self, name: str) -> Optional[str]:
        return os.path.join(self.config.logdir, name) if self.config.logdir else None

    # -- rank 0: keep, log, finish ----------------------------------------------------------------
    def _keep_if_best(self, trial: Trial):
        """A better score (strictly, as fastText) makes the trial the best; only the best trial's directory stays."""
        better = trial.score is not None and (self.best is None or trial.score > self.best.score)
        beaten = self.best if better else trial
        if better:
            self.best = trial
            self.strategy.update_best(trial.settings)
        if beaten is not None:
            shutil.rmtree(self._trial_dir(beaten.number), ignore_errors=True)

    def _log(self, trial: Trial, elapsed: float):
        """One line per trial (fastText prints progress, trials and best score), and TensorBoard:
        the score and best score by trial (each trial's own run holds its HParams entry)."""
        outcome = f"{self.metric} {trial.score:.4f}" if trial.score is not None else trial.status
        best = f"best {self.metric} {self.best.score:.4f} (trial {self.best.number})" if self.best else "no best yet"
        log.info(f"autotune {min(elapsed / self.duration, 1.0):6.1%} trial {trial.number} [{trial.settings}]: "
                 f"{outcome} in {trial.seconds:.1f}s; {best}")
        if trial.score is None:
            return
        self.dashboard.scalars(trial.number, {f"autotune/{self.metric}": trial.score,
                                              f"autotune/best_{self.metric}": self.best.score})
        self.dashboard.flush()

    def _finish(self, elapsed: float) -> dict:
        """Test the best model (if --test), move its checkpoint into place, then write autotune.json."""
        best_dir = self._trial_dir(self.best.number)
        summary = {"metric": self.metric, "duration_seconds": self.duration, "elapsed_seconds": round(elapsed, 3),
                   "validation": self.validation, "seed": self.config.seed, "fixed": self.fixed,
                   "best": self.best.as_dict(), "trials": [trial.as_dict() for trial in self.trials]}
        if self.config.test:
            summary["test"] = self._test(best_dir)
        os.replace(os.path.join(best_dir, CHECKPOINT_FILE), os.path.join(self.config.model_dir, CHECKPOINT_FILE))
        write_json_atomic(os.path.join(self.config.model_dir, AUTOTUNE_FILE), summary)
        return summary

    def _test(self, model_dir: str) -> dict:
        """The best model's test metrics, as `evaluate.py` reports them."""
        ctx = self.world.device(self.config.gpu)
        trained = load_model_dir(model_dir, ctx)
        docs = labelled_file_shard(self.config.test, trained.dictionary, trained.num_classes)
        return evaluate(trained.model, docs, self.config.k, ctx).as_dict(trained.label_names)
