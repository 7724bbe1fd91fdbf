"""Bad input fails cleanly: a non-zero exit, one `error:` line naming the file (and line), no
traceback, and nothing half-written: no checkpoint or temp file from a run that failed before
its first checkpoint, and an existing checkpoint byte-for-byte as it was.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TINY_SETTINGS,
    assert_clean_failure,
    assert_nothing_written,
    first_case_in_dev_tier,
    run_cli,
)

from fasttext_horovod.model.checkpoint import FORMAT_VERSION

VALID_ROW = b'"1","Stocks rally","Shares rose on Wall Street."\n'


def train(tmp_path, train_file, *extra, model_dir=None):
    model_dir = model_dir or tmp_path / "model"
    return run_cli("train", "--train", train_file, "--model-dir", model_dir, "--cache-dir", tmp_path / "cache",
                   *TINY_SETTINGS, *extra)


def csv_beside_classes(tmp_path, tiny_data_dir, name: str, content: bytes) -> Path:
    """A CSV file with the real classes.txt beside it."""
    shutil.copy(tiny_data_dir / "classes.txt", tmp_path / "classes.txt")
    path = tmp_path / name
    path.write_bytes(content)
    return path


def checkpoint_bytes(model_dir: Path) -> bytes:
    return (model_dir / "checkpoint.npz").read_bytes()


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir) -> Path:
    """A private copy of the tiny model, for tests that run training into an existing model dir."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "existing_model"))


# -- training data ------------------------------------------------------------------------------
TRAIN_CASES = {
    "empty": (b"", "empty", None),
    "missing_column": (VALID_ROW + b'"2"\n', "expected a class and at least one text column", 2),
    "label_not_a_class": (VALID_ROW + b'"abc","t","d"\n', "'abc' is not a class index", 2),
    "class_outside_classes_txt": (VALID_ROW + b'"5","t","d"\n', "class 5 is outside 1..4", 2),
    "non_utf8_on_line_3": (VALID_ROW * 2 + b'"3","caf\xe9 \xff","d"\n', "not valid UTF-8", 3),
}


@pytest.mark.parametrize("case", first_case_in_dev_tier(sorted(TRAIN_CASES)))
def test_bad_training_file_fails_naming_file_and_line_and_writes_nothing(tmp_path, tiny_data_dir, case):
    """Each malformed training file is one `error: FILE[:LINE]: ...` line, and no model."""
    content, message, line = TRAIN_CASES[case]
    path = csv_beside_classes(tmp_path, tiny_data_dir, "train.csv", content)
    done = train(tmp_path, path, "--test", tiny_data_dir / "test.csv")
    location = f"{path}:{line}:" if line else f"{path}:"
    assert_clean_failure(done, location, message)
    assert_nothing_written(tmp_path / "model", tmp_path / "cache")


def test_directory_as_train_file_is_an_error_not_a_traceback(tmp_path, tiny_data_dir):
    """--train pointing at a directory says so, naming it."""
    done = train(tmp_path, tiny_data_dir)
    assert_clean_failure(done, f"error: {tiny_data_dir}: is a directory")
    assert_nothing_written(tmp_path / "model", tmp_path / "cache")


def test_missing_train_file_is_an_error_not_a_traceback(tmp_path):
    """--train naming no file says so, naming it."""
    missing = tmp_path / "no_such_train.csv"
    done = train(tmp_path, missing)
    assert_clean_failure(done, f"error: {missing}: no such file")
    assert_nothing_written(tmp_path / "model", tmp_path / "cache")


def test_unknown_class_in_test_file_stops_training_before_any_checkpoint(tmp_path, tiny_data_dir):
    """A --test file with class 5 (classes.txt has 4) is rejected before training writes anything."""
    test_file = csv_beside_classes(tmp_path, tiny_data_dir, "test.csv", VALID_ROW + b'"5","t","d"\n')
    done = train(tmp_path, tiny_data_dir / "train.csv", "--test", test_file)
    assert_clean_failure(done, f"{test_file}:2:", "class 5 is outside 1..4 of classes.txt")
    assert_nothing_written(tmp_path / "model", tmp_path / "cache")


# -- evaluation and prediction inputs ------------------------------------------------------------
def test_evaluate_rejects_csv_class_outside_classes_txt(tmp_path, tiny_data_dir, tiny_model_dir):
    """evaluate.py: a CSV test row of class 5 for a 4-class model names its line."""
    test_file = csv_beside_classes(tmp_path, tiny_data_dir, "test.csv", VALID_ROW + b'"5","t","d"\n')
    done = run_cli("evaluate", "--model-dir", tiny_model_dir, "--test", test_file,
                   "--metrics-out", tmp_path / "metrics.json")
    assert_clean_failure(done, f"error: {test_file}:2:", "class 5")
    assert not (tmp_path / "metrics.json").exists()


def test_evaluate_rejects_fasttext_label_not_seen_in_training(tmp_path, tiny_model_dir):
    """evaluate.py: `__label__zzz` in a fastText-format test file was not in the training data."""
    test_file = tmp_path / "test.txt"
    test_file.write_bytes(b"__label__1 stocks rally on wall street\n__label__zzz some text\n")
    done = run_cli("evaluate", "--model-dir", tiny_model_dir, "--test", test_file)
    assert_clean_failure(done, f"error: {test_file}:2:", "'zzz' was not in the training data")


def test_evaluate_rejects_non_utf8_test_file_with_line(tmp_path, tiny_data_dir, tiny_model_dir):
    """evaluate.py: undecodable bytes on line 3 of the test file name `FILE:3`."""
    test_file = csv_beside_classes(tmp_path, tiny_data_dir, "test.csv", VALID_ROW * 2 + b'"2","\xc3\x28","d"\n')
    done = run_cli("evaluate", "--model-dir", tiny_model_dir, "--test", test_file)
    assert_clean_failure(done, f"error: {test_file}:3:", "not valid UTF-8")


def test_evaluate_rejects_empty_test_file(tmp_path, tiny_data_dir, tiny_model_dir):
    """evaluate.py: an empty test file is an error, not a report over zero documents."""
    test_file = csv_beside_classes(tmp_path, tiny_data_dir, "test.csv", b"")
    done = run_cli("evaluate", "--model-dir", tiny_model_dir, "--test", test_file)
    assert_clean_failure(done, f"error: {test_file}:", "empty")


@pytest.mark.parametrize("script", first_case_in_dev_tier(["evaluate", "predict"]))
def test_missing_input_file_is_named(tmp_path, tiny_model_dir, script):
    """A --test / --input that does not exist is named in the error."""
    missing = tmp_path / "absent.csv"
    flag = "--test" if script == "evaluate" else "--input"
    done = run_cli(script, "--model-dir", tiny_model_dir, flag, missing)
    assert_clean_failure(done, f"error: {missing}: no such file")


def test_predict_names_stdin_and_line_of_non_utf8_input(tiny_model_dir):
    """predict.py reading stdin: undecodable bytes on line 3 are `<stdin>:3`, and nothing is printed."""
    done = run_cli("predict", "--model-dir", tiny_model_dir, input=b"stocks fell\nthe team won\nbad \xff byte\n")
    assert_clean_failure(done, "error: <stdin>:3:", "not valid UTF-8")


# -- model directories ---------------------------------------------------------------------------
@pytest.fixture
def other_version_model_dir(tmp_path, tiny_model_dir) -> Path:
    """A real checkpoint whose metadata claims format version 999."""
    model_dir = tmp_path / "future_model"
    model_dir.mkdir()
    with np.load(tiny_model_dir / "checkpoint.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    assert meta["format_version"] != 999
    meta["format_version"] = 999
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(model_dir / "checkpoint.npz", "wb") as out:
        np.savez(out, **arrays)
    return model_dir


@pytest.mark.parametrize("script", first_case_in_dev_tier(["evaluate", "predict"]))
def test_checkpoint_of_another_format_version_is_refused_with_its_version(
        tiny_data_dir, other_version_model_dir, script):
    """evaluate.py / predict.py say which version the checkpoint is and which they read."""
    checkpoint = other_version_model_dir / "checkpoint.npz"
    before = checkpoint.read_bytes()
    args = ("--test", tiny_data_dir / "test.csv") if script == "evaluate" else ()
    done = run_cli(script, "--model-dir", other_version_model_dir, *args, input=b"stocks fell\n")
    assert_clean_failure(done, f"error: {checkpoint}:", "version 999", f"reads {FORMAT_VERSION}")
    assert checkpoint.read_bytes() == before


def test_resume_refuses_checkpoint_of_another_version_and_leaves_it_untouched(
        tmp_path, tiny_data_dir, other_version_model_dir):
    """train.py --resume on a version-999 checkpoint fails naming it, and does not overwrite it."""
    checkpoint = other_version_model_dir / "checkpoint.npz"
    before = checkpoint.read_bytes()
    done = train(tmp_path, tiny_data_dir / "train.csv", "--resume", model_dir=other_version_model_dir)
    assert_clean_failure(done, f"error: {checkpoint}:", "version 999")
    assert checkpoint.read_bytes() == before
    assert list(other_version_model_dir.glob(".tmp-*")) == []


@pytest.mark.parametrize("script", first_case_in_dev_tier(["evaluate", "predict"]))
def test_model_dir_without_checkpoint_says_to_train_first(tmp_path, tiny_data_dir, script):
    """An empty --model-dir names the checkpoint file it looked for."""
    model_dir = tmp_path / "empty_model"
    model_dir.mkdir()
    args = ("--test", tiny_data_dir / "test.csv") if script == "evaluate" else ()
    done = run_cli(script, "--model-dir", model_dir, *args, input=b"stocks fell\n")
    assert_clean_failure(done, f"error: {model_dir / 'checkpoint.npz'}: no checkpoint here")
    assert list(model_dir.iterdir()) == []


def test_nonexistent_model_dir_is_named(tmp_path, tiny_data_dir):
    """A --model-dir that does not exist is named, and not created."""
    model_dir = tmp_path / "nowhere"
    done = run_cli("evaluate", "--model-dir", model_dir, "--test", tiny_data_dir / "test.csv")
    assert_clean_failure(done, f"error: {model_dir}: no such model directory")
    assert not model_dir.exists()


def test_truncated_checkpoint_is_an_error_not_a_traceback(tmp_path, tiny_data_dir, tiny_model_dir):
    """A checkpoint cut short (say, by an interrupted copy) is refused, naming the file."""
    model_dir = tmp_path / "truncated_model"
    model_dir.mkdir()
    checkpoint = model_dir / "checkpoint.npz"
    checkpoint.write_bytes((tiny_model_dir / "checkpoint.npz").read_bytes()[:1000])
    done = run_cli("evaluate", "--model-dir", model_dir, "--test", tiny_data_dir / "test.csv")
    assert_clean_failure(done, f"error: {checkpoint}: not a checkpoint of this project")


# -- failures of a run into a directory that already holds a good model ----------------------------
def test_failed_run_leaves_existing_checkpoint_byte_identical(tmp_path, tiny_data_dir, model_copy):
    """Training a malformed file into a model dir keeps its checkpoint as it was."""
    before = checkpoint_bytes(model_copy)
    bad = csv_beside_classes(tmp_path, tiny_data_dir, "train.csv", VALID_ROW + b'"2"\n')
    done = train(tmp_path, bad, model_dir=model_copy)
    assert_clean_failure(done, f"error: {bad}:2:")
    assert checkpoint_bytes(model_copy) == before
    assert list(model_copy.glob(".tmp-*")) == []


# -- divergence ------------------------------------------------------------------------------------
@pytest.mark.parametrize("log_every", first_case_in_dev_tier(["1", "50"]), ids=["caught_at_a_log_step",
                                                                               "caught_at_epoch_end"])
def test_diverging_loss_stops_with_error_before_first_checkpoint(tmp_path, tiny_data_dir, log_every):
    """--lr 1e30 makes the loss NaN in epoch 1: `error: loss became nan`, and no checkpoint.

    With 600 documents an epoch is 10 steps, so with --log-every 50 no log step comes
    before the epoch ends: the end-of-epoch check must catch it.
    """
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--test", tiny_data_dir / "test.csv",
                   "--model-dir", tmp_path / "model", "--cache-dir", tmp_path / "cache",
                   "--epoch", "2", "--dim", "5", "--bucket", "10000", "--word-ngrams", "2",
                   "--lr", "1e30", "--log-every", log_every)
    assert_clean_failure(done, "error: loss became nan at epoch 1", "lower --lr")
    assert_nothing_written(tmp_path / "model", tmp_path / "cache")


@pytest.mark.slow
def test_diverging_run_leaves_existing_checkpoint_byte_identical(tmp_path, tiny_data_dir, model_copy):
    """A run that diverges in epoch 1 into a dir with a good model does not replace it."""
    before = checkpoint_bytes(model_copy)
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", model_copy,
                   "--cache-dir", tmp_path / "cache", "--epoch", "2", "--dim", "5", "--bucket", "10000",
                   "--word-ngrams", "2", "--lr", "1e30")
    assert_clean_failure(done, "error: loss became nan")
    assert checkpoint_bytes(model_copy) == before
    assert list(model_copy.glob(".tmp-*")) == []


@pytest.mark.parametrize("args, fragments", [
    (("--lr", "nan"), ("--lr", "must be a positive number, got nan")),
    (("--lr", "-1"), ("--lr", "must be a positive number")),
    (("--thread", "-3"), ("--thread", "must be at least 1")),
    (("--batch-size", "0"), ("--batch-size", "must be at least 1, got 0")),
    (("--gpu", "0"), ("--gpu", "GPU 0 is not available")),
])
def test_impossible_settings_are_one_clear_error_before_any_work(tmp_path, tiny_data_dir, args, fragments):
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", tmp_path / "model",
                   "--cache-dir", tmp_path / "cache", *TINY_SETTINGS[:-2], *args)
    assert_clean_failure(done, *fragments)
    assert done.returncode == 2
    assert_nothing_written(tmp_path / "model", tmp_path / "cache")


def test_library_callers_get_the_same_checks_as_the_command_line():
    from fasttext_horovod.data_pipeline.errors import InputError
    from fasttext_horovod.distributed.settings import TrainConfig
    with pytest.raises(InputError, match="--lr: must be a positive number, got nan"):
        TrainConfig(train="train.csv", model_dir="model", lr=float("nan"))
    with pytest.raises(InputError, match="--early-stopping: needs a validation set"):
        TrainConfig(train="train.csv", model_dir="model", early_stopping=True)
    assert TrainConfig(train="train.csv", model_dir="model", lr=0.5).batch_size == 32  # the stable default
