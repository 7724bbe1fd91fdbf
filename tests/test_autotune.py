"""Autotune searches as fastText's does and leaves the best trial's model, and only it.

The strategy is checked against fastText's `src/autotune.cc` (first trial, ranges, sigma
schedule, casts, fixed settings, f1); the search itself runs end to end through
`launch/train.py` on real AG News rows, scored on real held-out rows, in one process and
under `horovodrun -np 2`.
"""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import AG_NEWS, REPO, run_cli
from horovod_jobs import WEIGHTS, assert_same_weights, checkpoint_arrays, run, train_command
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fasttext_horovod.distributed.autotune import (
    SEARCH_SPACE,
    AutotuneStrategy,
    Settings,
    gauss_sigma,
    perturb,
    trial_score,
)
from fasttext_horovod.model.losses import LOSSES

DEFAULTS = Settings(lr=0.1, dim=100, epoch=5, word_ngrams=1, bucket=2_000_000, loss="softmax")
DURATION = 300.0
# fastText's AutotuneStrategy::ask: (min, max, startSigma, endSigma, linear); loss is ours.
FASTTEXT_SEARCH = {"epoch": (1, 100, 2.8, 2.5, False), "lr": (0.01, 5.0, 1.9, 1.0, False),
                   "dim": (1, 1000, 1.4, 0.3, False), "word_ngrams": (1, 5, 4.3, 2.4, True),
                   "bucket": (10_000, 10_000_000, 2.0, 1.5, False)}
TUNE_SECONDS = 20
FIXED_BUCKET = 100_000  # given explicitly, so never searched: keeps every trial's table small


def trials_from(strategy: AutotuneStrategy, count: int, rng: np.random.Generator) -> list:
    """`count` trials at random elapsed times, each finished trial becoming the best by chance."""
    trials = []
    for _ in range(count):
        trials.append(strategy.ask(rng.uniform(0, DURATION)))
        if rng.random() < 0.3:
            strategy.update_best(trials[-1])
    return trials


# -- the strategy ---------------------------------------------------------------------------------
def test_first_trial_is_the_given_settings_and_the_next_ones_move():
    strategy = AutotuneStrategy(DEFAULTS, fixed=(), duration=DURATION, seed=0)
    assert strategy.ask(0.0) == DEFAULTS
    assert all(strategy.ask(1.0) != DEFAULTS for _ in range(5))


def test_search_space_is_fastTexts():
    for name, (low, high, start_sigma, end_sigma, linear) in FASTTEXT_SEARCH.items():
        search = SEARCH_SPACE[name]
        assert (search.low, search.high, search.start_sigma, search.end_sigma, search.linear) == \
               (low, high, start_sigma, end_sigma, linear), name


def test_trials_stay_within_fastTexts_ranges():
    strategy = AutotuneStrategy(DEFAULTS, fixed=(), duration=DURATION, seed=1)
    trials = trials_from(strategy, 2000, np.random.default_rng(1))
    for name, (low, high, *_) in FASTTEXT_SEARCH.items():
        values = [getattr(trial, name) for trial in trials]
        assert low <= min(values) and max(values) <= high, name
        assert all(type(v) is type(getattr(DEFAULTS, name)) for v in values), name
        assert len(set(values)) > 3, name  # it is searched
    assert {trial.loss for trial in trials} == set(LOSSES)


def test_settings_given_explicitly_are_never_searched():
    fixed = ("lr", "dim", "loss")
    strategy = AutotuneStrategy(DEFAULTS, fixed=fixed, duration=DURATION, seed=2)
    for trial in trials_from(strategy, 500, np.random.default_rng(2)):
        assert (trial.lr, trial.dim, trial.loss) == (DEFAULTS.lr, DEFAULTS.dim, DEFAULTS.loss)
    everything = AutotuneStrategy(DEFAULTS, fixed=SEARCH_SPACE, duration=DURATION, seed=2)
    assert all(everything.ask(t) == DEFAULTS for t in range(20))


def test_bucket_is_searched_only_with_word_ngrams():
    strategy = AutotuneStrategy(DEFAULTS, fixed=(), duration=DURATION, seed=3)
    trials = [strategy.ask(t) for t in range(500)]  # always from the defaults' bucket
    assert {trial.bucket for trial in trials if trial.word_ngrams == 1} == {DEFAULTS.bucket}
    assert len({trial.bucket for trial in trials if trial.word_ngrams > 1}) > 10


def test_sigma_shrinks_on_fastTexts_schedule():
    """startSigma - (startSigma - endSigma) / 0.5 * min(0.5, max(t - 0.25, 0)), t = elapsed / duration."""
    for name, search in SEARCH_SPACE.items():
        start, end = search.start_sigma, search.end_sigma
        for t, expected in ((0.0, start), (0.25, start), (0.5, (start + end) / 2), (0.75, end), (1.0, end)):
            assert gauss_sigma(search, t) == pytest.approx(expected), (name, t)


def test_steps_spread_less_late_in_the_budget():
    """dim moves by 2^N(0, sigma): sigma 1.4 at the start, 0.3 at the end of the budget."""
    def spread(elapsed):
        strategy = AutotuneStrategy(DEFAULTS, fixed=set(SEARCH_SPACE) - {"dim"}, duration=DURATION, seed=4)
        strategy.ask(0.0)
        return np.std(np.log2([strategy.ask(elapsed).dim / DEFAULTS.dim for _ in range(4000)]))
    assert spread(0.0) == pytest.approx(1.4, rel=0.1)
    assert spread(DURATION) == pytest.approx(0.3, rel=0.15)


class FixedStep:
    """A generator whose every normal draw is `z` standard deviations."""

    def __init__(self, z):
        self.z = z

    def normal(self, mean, sigma):
        return mean + self.z * sigma


@pytest.mark.parametrize("name, value, z, expected", [
    ("word_ngrams", 1, -0.9 / 4.3, 1),        # int(0.1) = 0, clamped up to 1
    ("word_ngrams", 2, 1.9 / 4.3, 3),         # int(3.9) truncates toward zero
    ("dim", 100, 1.5 / 1.4, 282),             # 100 x 2^1.5 = 282.8
    ("epoch", 5, -0.5 / 2.8, 3),              # int(5 / sqrt(2)) = int(3.54)
    ("lr", 0.1, 10 / 1.9, 5.0),               # clamped to fastText's maximum lr
    ("bucket", 2_000_000, -10 / 2.0, 10_000),  # clamped to the minimum bucket
    ("loss", 0, 1.5 / 4.0, 1),                # index 0 (softmax) + 1.5 -> 1 (hs)
])
def test_a_step_is_cast_and_clamped_like_fastText(name, value, z, expected):
    assert perturb(value, SEARCH_SPACE[name], 0.0, FixedStep(z)) == expected


def test_f1_is_fastTexts_meter_f1():
    """2 P R / (P + R) is fastText's 2 x correct / (predicted + gold): 1 correct of 2 predicted, 4 gold."""
    valid = {"precision_at_k": 1 / 2, "recall_at_k": 1 / 4, "accuracy": 0.5}
    assert trial_score(valid, "f1") == pytest.approx(2 * 1 / (2 + 4))
    assert trial_score({"precision_at_k": 0.0, "recall_at_k": 0.0}, "f1") == 0.0
    assert trial_score(valid, "accuracy") == 0.5


# -- a real search, end to end ---------------------------------------------------------------------
def held_out_rows(path, first: int, count: int):
    """Rows first..first+count-1 (1-based) of the real train.csv: none of them is in the training sample."""
    with open(AG_NEWS / "train.csv", "rb") as source:
        lines = source.readlines()[first - 1:first - 1 + count]
    path.write_bytes(b"".join(lines))
    return path


def f1(report: dict) -> float:
    return trial_score(report, "f1")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_data_dir):
    """A 20 s search on 600 real rows, scored on 200 held-out rows, with TensorBoard and --test."""
    root = tmp_path_factory.mktemp("autotune")
    valid = held_out_rows(root / "valid.csv", 601, 200)
    model_dir, logdir = root / "model", root / "tb"
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--test", tiny_data_dir / "test.csv",
                   "--autotune-validation", valid, "--autotune-duration", TUNE_SECONDS, "--bucket", FIXED_BUCKET,
                   "--model-dir", model_dir, "--logdir", logdir, "--cache-dir", root / "cache",
                   "--metrics-out", root / "summary.json")
    assert done.returncode == 0, done.stderr
    summary = json.loads((model_dir / "autotune.json").read_text())
    return {"root": root, "model_dir": model_dir, "logdir": logdir, "valid": valid, "summary": summary,
            "stdout": done.stdout, "data": tiny_data_dir}


def finished(summary) -> list:
    return [trial for trial in summary["trials"] if trial["status"] == "finished"]


@pytest.mark.slow
def test_search_starts_from_the_defaults_and_keeps_the_given_bucket(tuned):
    summary = tuned["summary"]
    assert summary["trials"][0]["settings"] == {"lr": 0.1, "dim": 100, "epoch": 5, "word_ngrams": 1,
                                                "bucket": FIXED_BUCKET, "loss": "softmax"}
    assert summary["fixed"] == ["bucket"]
    assert {trial["settings"]["bucket"] for trial in summary["trials"]} == {FIXED_BUCKET}
    assert len(finished(summary)) >= 3
    assert all(trial["status"] in ("finished", "aborted", "diverged", "too large") for trial in summary["trials"])


@pytest.mark.slow
def test_best_is_the_first_trial_with_the_highest_score(tuned):
    summary = tuned["summary"]
    scores = [trial["score"] for trial in finished(summary)]
    best = summary["best"]
    assert best["score"] == max(scores) == best["valid"]["f1"]
    assert best["trial"] == next(t["trial"] for t in finished(summary) if t["score"] == max(scores))
    printed = json.loads(tuned["stdout"])
    assert printed["best"] == best["settings"] and printed["valid_f1"] == best["score"]


@pytest.mark.slow
def test_kept_model_scores_what_the_best_trial_scored(tuned):
    """evaluate.py on the validation file gives the best trial's f1; on the test file, the reported accuracy."""
    for path, expected in ((tuned["valid"], tuned["summary"]["best"]["score"]),
                           (tuned["data"] / "test.csv", f1(tuned["summary"]["test"]))):
        report_path = tuned["root"] / f"report-{path.stem}.json"
        done = run_cli("evaluate", "--model-dir", tuned["model_dir"], "--test", path, "--metrics-out", report_path)
        assert done.returncode == 0, done.stderr
        assert f1(json.loads(report_path.read_text())) == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_kept_model_is_what_a_retrain_with_the_best_settings_gives(tuned):
    """Why autotune skips fastText's final retrain: training is deterministic given settings and seed."""
    best = tuned["summary"]["best"]["settings"]
    retrained = tuned["root"] / "retrained"
    done = run_cli("train", "--train", tuned["data"] / "train.csv", "--model-dir", retrained,
                   "--cache-dir", tuned["root"] / "cache",
                   *[arg for name, value in best.items() for arg in (f"--{name.replace('_', '-')}", value)])
    assert done.returncode == 0, done.stderr
    kept, again = checkpoint_arrays(tuned["model_dir"]), checkpoint_arrays(retrained)
    for name in WEIGHTS:
        np.testing.assert_array_equal(kept[name], again[name], err_msg=name)


@pytest.mark.slow
def test_model_dir_holds_the_model_and_the_search_only(tuned):
    assert sorted(p.name for p in tuned["model_dir"].iterdir()) == ["autotune.json", "checkpoint.npz"]
    assert json.loads((tuned["root"] / "summary.json").read_text()) == tuned["summary"]


@pytest.mark.slow
def test_tensorboard_has_every_finished_trial_as_hparams_and_the_best_score_by_trial(tuned):
    """Each trial's run is its own HParams session: the searched settings and its validation accuracy."""
    for trial in finished(tuned["summary"]):
        events = EventAccumulator(str(tuned["logdir"] / f"trial-{trial['trial']:03d}"))
        events.Reload()
        start = plugin_data_pb2.HParamsPluginData.FromString(
            events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        logged = {name: value.string_value or value.number_value for name, value in start.hparams.items()}
        assert {name: logged[name] for name in trial["settings"]} == trial["settings"]
        assert events.Scalars("valid/accuracy")[-1].value == pytest.approx(trial["valid"]["accuracy"], abs=1e-6)
    events = EventAccumulator(str(tuned["logdir"] / "autotune"))
    events.Reload()
    best = [event.value for event in events.Scalars("autotune/best_f1")]
    assert best == sorted(best) and best[-1] == pytest.approx(tuned["summary"]["best"]["score"], abs=1e-6)


@pytest.mark.slow
def test_ctrl_c_ends_the_search_and_keeps_the_best_trial_so_far(tmp_path, tiny_data_dir):
    """As fastText's SIGINT: the search stops early and the best finished trial is kept."""
    valid = held_out_rows(tmp_path / "valid.csv", 601, 200)
    command = [sys.executable, str(REPO / "launch" / "train.py"), "--train", str(tiny_data_dir / "train.csv"),
               "--autotune-validation", str(valid), "--autotune-duration", "120", "--bucket", str(FIXED_BUCKET),
               "--model-dir", str(tmp_path / "model"), "--cache-dir", str(tmp_path / "cache")]
    with subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        for line in process.stderr:
            if line.startswith("autotune") and " best f1 " in line:  # a trial has finished
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    summary = json.loads((tmp_path / "model" / "autotune.json").read_text())
    assert summary["elapsed_seconds"] < 60 and summary["best"]["status"] == "finished"
    assert json.loads(stdout)["best"] == summary["best"]["settings"]


# -- bad input: one error, nothing written ---------------------------------------------------------
def assert_one_error(done, *fragments):
    """Exit status 2 and one error line holding every fragment, without a traceback."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and all(fragment in errors[0] for fragment in fragments), done.stderr


def tune(tmp_path, data, valid, *extra):
    return run_cli("train", "--train", data / "train.csv", "--autotune-validation", valid,
                   "--model-dir", tmp_path / "model", "--cache-dir", tmp_path / "cache", "--bucket", FIXED_BUCKET,
                   *extra)


@pytest.mark.parametrize("duration", ["0", "-5", "nan"])
def test_a_budget_that_is_not_positive_is_refused_before_anything_is_written(tmp_path, tiny_data_dir, duration):
    done = tune(tmp_path, tiny_data_dir, tiny_data_dir / "test.csv", "--autotune-duration", duration)
    assert_one_error(done, "--autotune-duration must be a positive number of seconds")
    assert not (tmp_path / "model").exists()


def test_an_empty_validation_file_is_named_and_nothing_is_written(tmp_path, tiny_data_dir):
    empty = tmp_path / "valid.csv"
    empty.write_bytes(b"")
    done = tune(tmp_path, tiny_data_dir, empty, "--autotune-duration", "30")
    assert_one_error(done, f"error: {empty}: no documents")
    assert not (tmp_path / "model").exists()


def test_a_budget_too_short_to_train_once_is_fastTexts_error(tmp_path, tiny_data_dir):
    done = tune(tmp_path, tiny_data_dir, tiny_data_dir / "test.csv", "--autotune-duration", "0.001")
    assert_one_error(done, "--autotune-duration 0.001: not enough time to train once")
    assert not (tmp_path / "model").exists()


# -- Horovod: every trial on both ranks ------------------------------------------------------------
@pytest.mark.horovod
@pytest.mark.slow
def test_two_ranks_tune_together_and_keep_the_model_one_process_retrains(tmp_path, tiny_data_dir):
    """rank 0's settings reach rank 1 (else the exchange fails on mismatched shapes); and the
    kept model is, to float tolerance, what one process trains with the best settings."""
    fixed = ("--lr", "0.25", "--epoch", "5", "--bucket", FIXED_BUCKET)  # keeps the two runs' rounding comparable
    valid = held_out_rows(tmp_path / "valid.csv", 601, 200)
    common = ("--train", tiny_data_dir / "train.csv", "--cache-dir", tmp_path / "cache", *fixed)
    done = run(train_command("gloo", 2, *common, "--autotune-validation", valid, "--autotune-duration", TUNE_SECONDS,
                             "--model-dir", tmp_path / "ranks", "--batch-size", 32))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "ranks" / "autotune.json").read_text())
    assert len(finished(summary)) >= 2 and summary["fixed"] == ["bucket", "epoch", "lr"]
    best = summary["best"]["settings"]
    done = run(train_command("none", 1, *common, "--model-dir", tmp_path / "single", "--batch-size", 64,
                             "--dim", best["dim"], "--word-ngrams", best["word_ngrams"], "--loss", best["loss"]))
    assert done.returncode == 0, done.stderr
    assert_same_weights(tmp_path / "ranks", tmp_path / "single")
