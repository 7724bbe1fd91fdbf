"""Validation sets (`--valid`, `--valid-fraction`) and `--early-stopping --patience`."""
import json

import numpy as np
import pytest
from conftest import run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fasttext_horovod.data_pipeline.readers import read_records
from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess
from fasttext_horovod.model.checkpoint import load_checkpoint

SETTINGS = ("--dim", "5", "--bucket", "10000", "--word-ngrams", "2", "--lr", "0.25")


def event_series(logdir, tag):
    events = EventAccumulator(str(logdir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_valid_fraction_holds_documents_out_of_dictionary_and_shards(tmp_path, tiny_data_dir):
    train = str(tiny_data_dir / "train.csv")
    settings = CorpusSettings(bucket=1000, num_shards=3, valid_fraction=0.25, split_seed=7)
    corpus = preprocess(train, settings, str(tmp_path), num_classes=4)
    held_out = corpus.validation()
    assert held_out.num_docs == 150
    assert sum(corpus.docs_per_shard) == 450
    words = {w for r in read_records(train, 4) for w in r.words}
    assert len(corpus.dictionary.words) < len(words)  # words only the held-out rows use are not in it
    again = preprocess(train, settings, str(tmp_path / "again"), num_classes=4).validation()
    np.testing.assert_array_equal(again.ids, held_out.ids)
    other = preprocess(train, CorpusSettings(**{**settings.__dict__, "split_seed": 8}), str(tmp_path), 4).validation()
    assert not np.array_equal(other.offsets, held_out.offsets) or not np.array_equal(other.ids, held_out.ids)


def test_valid_fraction_that_leaves_nothing_is_an_error(tmp_path, tiny_data_dir):
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", tmp_path / "model",
                   "--cache-dir", tmp_path / "cache", "--valid-fraction", "0.0001", *SETTINGS)
    assert done.returncode == 2
    assert "leaves no labelled validation document" in done.stderr
    assert not (tmp_path / "model" / "checkpoint.npz").exists()


@pytest.mark.slow
def test_validation_accuracy_and_loss_are_logged_every_epoch(tmp_path, tiny_data_dir):
    logdir = tmp_path / "tb"
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--valid", tiny_data_dir / "test.csv",
                   "--model-dir", tmp_path / "model", "--cache-dir", tmp_path / "cache", "--logdir", logdir,
                   "--epoch", 3, "--metrics-out", tmp_path / "metrics.json", *SETTINGS)
    assert done.returncode == 0, done.stderr
    accuracy, loss = event_series(logdir, "valid/accuracy"), event_series(logdir, "valid/loss")
    assert len(accuracy) == len(loss) == 3
    assert loss[-1][1] < loss[0][1]  # it learns
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["valid"]["accuracy"] == pytest.approx(accuracy[-1][1])
    assert metrics["valid"]["n_test"] == 200


@pytest.mark.slow
def test_early_stopping_stops_after_patience_and_keeps_the_best_model(tmp_path, tiny_data_dir):
    """Train far too long with a high rate: validation accuracy peaks, the run stops `patience`
    epochs later, and the model left in --model-dir is the peak epoch's."""
    model_dir, logdir, patience = tmp_path / "model", tmp_path / "tb", 2
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--valid-fraction", "0.2",
                   "--test", tiny_data_dir / "test.csv", "--early-stopping", "--patience", patience,
                   "--model-dir", model_dir, "--cache-dir", tmp_path / "cache", "--logdir", logdir, "--epoch", 40,
                   "--metrics-out", tmp_path / "metrics.json", *SETTINGS)
    assert done.returncode == 0, done.stderr
    valid = [value for _, value in event_series(logdir, "valid/accuracy")]
    best_epoch = int(np.argmax(valid)) + 1  # the first epoch to reach the best accuracy
    assert len(valid) == best_epoch + patience < 40
    _, meta = load_checkpoint(str(model_dir / "checkpoint.npz"))
    assert meta["finished"] and meta["progress"]["epoch"] == best_epoch
    assert meta["metrics"]["valid"]["accuracy"] == pytest.approx(max(valid))
    assert not (model_dir / "best.npz").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epoch"] == best_epoch
    test_accuracy = dict((round(step), value) for step, value in event_series(logdir, "test/accuracy"))
    step_of_best = event_series(logdir, "valid/accuracy")[best_epoch - 1][0]
    assert metrics["accuracy"] == pytest.approx(test_accuracy[step_of_best])
    evaluated = run_cli("evaluate", "--model-dir", model_dir, "--test", tiny_data_dir / "test.csv",
                        "--metrics-out", tmp_path / "evaluated.json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "evaluated.json").read_text())["accuracy"] == pytest.approx(metrics["accuracy"])


@pytest.mark.parametrize("args, message", [
    (("--early-stopping",), "error: --early-stopping: needs a validation set"),
    (("--valid-fraction", "1.5"), "error: --valid-fraction: must be in [0, 1)"),
    (("--valid-fraction", "0.1", "--valid", "x.csv"), "error: --valid: give --valid or --valid-fraction, not both"),
    (("--valid-fraction", "0.1", "--early-stopping", "--patience", "0"), "error: --patience: must be at least 1"),
])
def test_bad_validation_settings_are_usage_errors(tmp_path, tiny_data_dir, args, message):
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", tmp_path / "model", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.slow
def test_empty_validation_file_is_an_error_naming_it(tmp_path, tiny_data_dir):
    empty = tmp_path / "valid.csv"
    empty.write_text("")
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--valid", empty, "--model-dir",
                   tmp_path / "model", "--cache-dir", tmp_path / "cache", *SETTINGS)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {empty}: no documents"), done.stderr
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").iterdir())
