"""Each failure of the hostile-input probes (issue 13) as a test: crafted checkpoints and
fastText files, impossible output paths, two runs into one model dir, a full disk, a resume
on other data, and the leftovers of killed runs. Each ends in one `error:` line and exit 2,
or is handled; none writes a checkpoint from a bad file.
"""
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    AG_NEWS,
    REPO,
    TINY_SETTINGS,
    assert_clean_failure,
    assert_nothing_written,
    first_case_in_dev_tier,
    run_cli,
)
from fuzzing import memory_cap
from test_bad_input import checkpoint_bytes

from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.staging import building_dir, remove_abandoned_builds
from fasttext_horovod.data_pipeline.vectors import read_vectors
from fasttext_horovod.distributed.run_guard import ModelDirLock
from fasttext_horovod.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fasttext_horovod.model.fasttext_binary import (
    FastTextArgs,
    FastTextModel,
    read_fasttext_bin,
    write_fasttext_bin,
)
from fasttext_horovod.model.product_quantizer import ProductQuantizer, QuantizedMatrix


def crafted_model(tmp_path: Path, tiny_model_dir: Path, name: str, change) -> Path:
    """A copy of the tiny model whose checkpoint arrays `change(arrays)` edited."""
    arrays, meta = load_checkpoint(str(tiny_model_dir / "checkpoint.npz"))
    arrays = {key: value.copy() for key, value in arrays.items()}
    change(arrays)
    model_dir = tmp_path / name
    save_checkpoint(str(model_dir / "checkpoint.npz"), arrays, meta)
    return model_dir


def input_rows_set_to(value_of_rows):
    def change(arrays):
        settings = arrays["dict_settings"]
        rows = len(arrays["dict_word_counts"]) + int(settings[1])
        arrays["input_rows"][-1] = value_of_rows(rows)
    return change


def negative_bucket(arrays):
    arrays["dict_settings"][1] = -5


CRAFTED = {
    "row_id_equal_to_row_count": (input_rows_set_to(lambda rows: rows), "stored input rows"),
    "row_id_past_the_end": (input_rows_set_to(lambda rows: rows + 100), "stored input rows"),
    "row_id_10_to_the_12": (input_rows_set_to(lambda rows: 10 ** 12), "stored input rows"),
    "row_id_negative": (input_rows_set_to(lambda rows: -1), "stored input rows"),
    "negative_bucket": (negative_bucket, "bucket -5"),
}


@pytest.mark.parametrize("case", first_case_in_dev_tier(sorted(CRAFTED)))
@pytest.mark.parametrize("script", ["evaluate", "predict"])
def test_crafted_checkpoint_is_refused_not_a_signal(tmp_path, tiny_data_dir, tiny_model_dir, case, script):
    change, reason = CRAFTED[case]
    model_dir = crafted_model(tmp_path, tiny_model_dir, case, change)
    args = ("--test", tiny_data_dir / "test.csv") if script == "evaluate" else ()
    done = run_cli(script, "--model-dir", model_dir, *args, input=b"stocks fell\n")
    assert done.returncode == 2, done.stderr
    assert_clean_failure(done, f"error: {model_dir / 'checkpoint.npz'}: damaged checkpoint", reason)


@pytest.mark.slow  # two runs; the crafted rows themselves are refused in the development tier above
def test_resume_from_crafted_checkpoint_is_refused_and_leaves_it(tmp_path, tiny_data_dir, tiny_model_dir):
    model_dir = crafted_model(tmp_path, tiny_model_dir, "crafted", input_rows_set_to(lambda rows: rows))
    before = checkpoint_bytes(model_dir)
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", model_dir,
                   "--cache-dir", tmp_path / "cache", "--resume", *TINY_SETTINGS)
    assert done.returncode == 2
    assert_clean_failure(done, "damaged checkpoint", "stored input rows")
    assert checkpoint_bytes(model_dir) == before


def test_zip_bomb_checkpoint_is_refused_before_inflating(tmp_path):
    """200 MiB of zeros deflate to 200 KB; the loader refuses without inflating them."""
    path = tmp_path / "checkpoint.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("input_values.npy", "w", force_zip64=True) as member:
            for _ in range(200):
                member.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    with memory_cap(64 << 20), pytest.raises(CheckpointError, match="not an uncompressed array"):
        load_checkpoint(str(path))


def fasttext_sample_bin(tmp_path: Path) -> Path:
    """A small fastText classifier written as fastText writes it."""
    rng = np.random.default_rng(0)
    words = [b"stocks", b"fell", b"team", b"won", b"</s>"]
    labels = [b"__label__1", b"__label__2"]
    args = FastTextArgs(dim=4, word_ngrams=2, bucket=50)
    model = FastTextModel(args, words, np.arange(5, 0, -1), labels, np.array([3, 2]), 20,
                          rng.normal(size=(55, 4)).astype(np.float32), rng.normal(size=(2, 4)).astype(np.float32))
    path = tmp_path / "model.bin"
    write_fasttext_bin(str(path), model)
    return path


def patched(path: Path, offset: int, fmt: str, value) -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    out = path.with_name(f"patched_{offset}.bin")
    out.write_bytes(bytes(data))
    return out


# Offsets in the file: magic, version (8 bytes), then Args' int32 dim, ..., bucket (the 9th),
# then the dictionary header's size, nwords, nlabels.
BIN_DAMAGE = {
    "no_labels": [(64, "<i", 5), (72, "<i", 0)],
    "dim_zero": [(8, "<i", 0)],
    "negative_bucket": [(40, "<i", -7)],
    "dictionary_of_2_31_entries": [(64, "<i", 2 ** 31 - 1), (68, "<i", 2 ** 31 - 3)],
}


@pytest.mark.parametrize("case", sorted(BIN_DAMAGE))
@pytest.mark.slow
def test_damaged_bin_is_refused_by_import_and_predict(tmp_path, case):
    path = fasttext_sample_bin(tmp_path)
    for offset, fmt, value in BIN_DAMAGE[case]:
        path = patched(path, offset, fmt, value)
    with memory_cap(64 << 20), pytest.raises(CheckpointError, match=f"^{path}: "):
        read_fasttext_bin(str(path))
    done = run_cli("import_fasttext", "--fasttext-model", path, "--model-dir", tmp_path / "imported")
    assert_clean_failure(done, f"error: {path}: ")
    assert done.returncode == 2
    assert_nothing_written(tmp_path / "imported")
    done = run_cli("predict", "--fasttext-model", path, input=b"stocks fell\n")
    assert_clean_failure(done, f"error: {path}: ")


def test_ftz_whose_codes_expand_to_full_rows_is_refused(tmp_path):
    """One centroid group as wide as the row: 1 code byte stands for 4 KB of floats."""
    dim, rows = 1024, 40_000
    pq = ProductQuantizer(dim, dim, np.zeros(dim * 256, dtype=np.float32))
    codes = np.zeros((rows, 1), dtype=np.uint8)
    args = FastTextArgs(dim=dim, word_ngrams=2, bucket=rows - 1)
    model = FastTextModel(args, [b"</s>"], np.array([1]), [b"__label__1"], np.array([1]), 1,
                          QuantizedMatrix(codes, pq), np.zeros((1, dim), dtype=np.float32))
    path = tmp_path / "model.ftz"
    write_fasttext_bin(str(path), model)
    assert path.stat().st_size < 2 << 20  # a 160 MB matrix dequantized
    with memory_cap(64 << 20), pytest.raises(CheckpointError, match="more than 64x the file"):
        read_fasttext_bin(str(path))
    done = run_cli("import_fasttext", "--fasttext-model", path, "--model-dir", tmp_path / "imported")
    assert_clean_failure(done, "would take 156 MiB dequantized")
    assert_nothing_written(tmp_path / "imported")


def test_vec_header_promising_a_billion_words_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.vec"
    path.write_bytes(b"1000000000 10\nstocks" + b" 0.5" * 10 + b"\n")
    with memory_cap(64 << 20), pytest.raises(InputError, match="promises 1,000,000,000 vectors"):
        read_vectors(str(path), 10)


# -- outputs -------------------------------------------------------------------------------------
def bad_output_paths(tmp_path: Path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {
        "model_dir_is_a_file": (("--model-dir", a_file), "--model-dir is a file"),
        "model_dir_under_a_file": (("--model-dir", a_file / "model"), f"cannot be created: {a_file} is a file"),
        "cache_dir_is_a_file": (("--cache-dir", a_file), "--cache-dir is a file"),
        "logdir_is_a_file": (("--logdir", a_file), "--logdir is a file"),
        "metrics_out_is_a_directory": (("--metrics-out", tmp_path), "--metrics-out is a directory"),
    }


@pytest.mark.parametrize("case", ["model_dir_is_a_file", "model_dir_under_a_file", "cache_dir_is_a_file",
                                  "logdir_is_a_file", "metrics_out_is_a_directory"])
def test_unusable_output_path_is_refused_before_any_work(tmp_path, tiny_data_dir, case):
    args, message = bad_output_paths(tmp_path)[case]
    options = {"--model-dir": tmp_path / "model", "--cache-dir": tmp_path / "cache", **dict([args])}
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", *[x for kv in options.items() for x in kv],
                   *TINY_SETTINGS)
    assert_clean_failure(done, message)
    assert done.returncode == 2
    assert "progress" not in done.stderr  # refused before preprocessing
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_model_dir_is_refused_before_any_work(tmp_path, tiny_data_dir):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model_dir.chmod(0o555)
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", model_dir,
                   "--cache-dir", tmp_path / "cache", *TINY_SETTINGS)
    assert_clean_failure(done, "--model-dir is not writable")


@pytest.mark.slow
def test_full_disk_at_the_checkpoint_is_one_error_line_and_no_temp_file(tmp_path, tiny_data_dir):
    """A file-size limit makes the checkpoint's write fail as a full disk would (EFBIG vs ENOSPC)."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    model_dir = tmp_path / "model"
    command = [sys.executable, str(REPO / "launch" / "train.py"), "--train", str(tiny_data_dir / "train.csv"),
               "--model-dir", str(model_dir), "--cache-dir", str(tmp_path / "cache"), *TINY_SETTINGS]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert done.returncode == 2, done.stderr
    assert_clean_failure(subprocess.CompletedProcess(done.args, 2, "", done.stderr),
                         f"error: {model_dir / 'checkpoint.npz'}: cannot write (File too large)")
    assert_nothing_written(model_dir)


# -- the model dir lock --------------------------------------------------------------------------
def test_second_run_into_a_locked_model_dir_is_refused(tmp_path, tiny_data_dir):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    lock = ModelDirLock(str(model_dir))
    try:
        done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", model_dir,
                       "--cache-dir", tmp_path / "cache", *TINY_SETTINGS)
    finally:
        lock.release()
    assert_clean_failure(done, f"error: {model_dir}: another run (pid {os.getpid()} on ", "is using this --model-dir")
    assert done.returncode == 2
    assert_nothing_written(model_dir)


def test_lock_of_a_killed_run_is_stale_and_its_temp_files_are_removed(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from fasttext_horovod.distributed.run_guard import ModelDirLock\n"
        f"lock = ModelDirLock({str(model_dir)!r})\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"another run \\(pid {holder.pid} on "):
            ModelDirLock(str(model_dir))
        (model_dir / ".tmp-abc123.npz").write_bytes(b"half a checkpoint")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = ModelDirLock(str(model_dir))  # the killed run's lock file is still there, but nobody holds it
    lock.release()
    assert list(model_dir.glob(".tmp-*")) == []


# -- caches and runs -----------------------------------------------------------------------------
def test_half_built_cache_of_a_killed_run_is_removed_but_not_a_running_build(tmp_path):
    cache = tmp_path / "cache"
    abandoned = cache / ".building-killed"
    abandoned.mkdir(parents=True)
    with building_dir(str(cache), str(cache / "corpus"), lambda d: False) as running:
        remove_abandoned_builds(str(cache))  # a build is running: nothing is removed
        assert abandoned.is_dir() and Path(running).is_dir()
        (Path(running) / "meta.json").write_text("{}")
    remove_abandoned_builds(str(cache))
    assert not abandoned.exists()
    assert sorted(os.listdir(cache)) == [".lock", "corpus"]


def test_second_build_of_the_same_cache_publishes_without_error(tmp_path):
    """The loser of the check-then-rename race keeps the winner's corpus and drops its own."""
    cache, final = tmp_path / "cache", tmp_path / "cache" / "corpus"
    for run in ("first", "second"):
        with building_dir(str(cache), str(final), lambda d: (Path(d) / "meta.json").is_file()) as staging:
            (Path(staging) / "meta.json").write_text(run)
    assert (final / "meta.json").read_text() == "first"
    assert sorted(os.listdir(cache)) == [".lock", "corpus"]


def test_files_honour_the_umask(tiny_model_dir):
    """The session's model was trained under this process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoint.npz", "metrics.json"):
        assert (tiny_model_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize("flag, message", first_case_in_dev_tier([
    ("--min-count", "no word occurs --min-count 1000000 times: the vocabulary is empty"),
    ("--min-count-label", "no label occurs --min-count-label 1000000 times: the label set is empty"),
]))
def test_thresholds_that_empty_the_vocabulary_are_named(tmp_path, tiny_data_dir, flag, message):
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", tmp_path / "model",
                   "--cache-dir", tmp_path / "cache", *TINY_SETTINGS, flag, "1000000")
    assert_clean_failure(done, message)
    assert_nothing_written(tmp_path / "model", tmp_path / "cache")


@pytest.mark.slow
def test_resume_on_other_data_of_the_same_vocabulary_is_refused(tmp_path, tiny_data_dir, tiny_model_dir):
    """The same rows shuffled: every word, every count the same, a different corpus."""
    rows = (tiny_data_dir / "train.csv").read_bytes().splitlines(keepends=True)
    random.Random(0).shuffle(rows)
    other = tmp_path / "data"
    other.mkdir()
    (other / "train.csv").write_bytes(b"".join(rows))
    shutil.copy(tiny_data_dir / "classes.txt", other / "classes.txt")
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    before = checkpoint_bytes(model_dir)
    done = run_cli("train", "--train", other / "train.csv", "--model-dir", model_dir, "--cache-dir",
                   tmp_path / "cache", "--resume", *TINY_SETTINGS)
    assert_clean_failure(done, "checkpoint was trained on other data: its corpus fingerprint is")
    assert checkpoint_bytes(model_dir) == before


def test_non_utf8_classes_txt_is_one_error_line(tmp_path, tiny_data_dir):
    (tmp_path / "train.csv").write_bytes((tiny_data_dir / "train.csv").read_bytes())
    (tmp_path / "classes.txt").write_bytes(b"World\nSports\nBusin\xe9ss\nSci/Tech\n")
    done = run_cli("train", "--train", tmp_path / "train.csv", "--model-dir", tmp_path / "model",
                   "--cache-dir", tmp_path / "cache", *TINY_SETTINGS)
    assert_clean_failure(done, f"error: {tmp_path / 'classes.txt'}:3: not valid UTF-8")


def test_damaged_cache_metadata_is_one_error_line(tmp_path):
    from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess
    corpus = preprocess(str(AG_NEWS / "train.csv"), CorpusSettings(num_shards=2, bucket=1000), str(tmp_path), 4)
    (Path(corpus.directory) / "meta.json").write_text('{"settings": {"num_shards": 2}, "docs_per')
    with pytest.raises(InputError, match=f"^{corpus.directory}: damaged corpus cache"):
        preprocess(str(AG_NEWS / "train.csv"), CorpusSettings(num_shards=2, bucket=1000), str(tmp_path), 4)


@pytest.mark.slow
def test_full_logdir_does_not_cost_the_epoch_checkpoint(tmp_path, tiny_data_dir):
    """TensorBoard's event file on a full disk: every name tensorboardX may give it in the next
    five minutes (`events.out.tfevents.<time>.<host>`) is a link to /dev/full, whose writes
    fail with ENOSPC. The run fails at its first flush, after the epoch's checkpoint."""
    logdir = tmp_path / "tb"
    logdir.mkdir()
    now = int(time.time())
    for second in range(now, now + 300):
        (logdir / f"events.out.tfevents.{second}.{socket.gethostname()}").symlink_to("/dev/full")
    model_dir = tmp_path / "model"
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--test", tiny_data_dir / "test.csv",
                   "--model-dir", model_dir, "--cache-dir", tmp_path / "cache", "--logdir", logdir, *TINY_SETTINGS)
    assert done.returncode == 2, done.stderr
    assert "error: writing output: No space left on device" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr  # tensorboardX's writer thread and exit handler included
    arrays, meta = load_checkpoint(str(model_dir / "checkpoint.npz"))
    assert meta["progress"]["epoch"] == 1 and len(arrays["input_rows"]) > 0


def _shorter_row_history(arrays):
    arrays["row_history"] = arrays["row_history"][:-1]


def _infinite_output_history(arrays):
    arrays["output_history"][0, 0] = np.inf


def _narrower_row_velocity(arrays):
    arrays["row_velocity"] = arrays["row_velocity"][:, :-1]


@pytest.mark.slow  # a training run and a resume for each case
@pytest.mark.parametrize("optimizer, change, reason", [
    ("adagrad", _shorter_row_history, "optimizer state 'row_history'"),
    ("adagrad", _infinite_output_history, "'output_history' is not finite"),
    ("nesterov", _narrower_row_velocity, "optimizer state 'row_velocity'")])
def test_resume_from_checkpoint_with_damaged_optimizer_state_is_refused(tmp_path, tiny_data_dir, optimizer, change,
                                                                        reason):
    """Per-row state must match the checkpoint's rows: MXNet's scatter of another shape ends in
    a traceback."""
    settings = (*TINY_SETTINGS, "--optimizer", optimizer, "--cache-dir", tmp_path / "cache")
    trained = tmp_path / "trained"
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", trained, *settings)
    assert done.returncode == 0, done.stderr
    model_dir = crafted_model(tmp_path, trained, "crafted", change)
    before = checkpoint_bytes(model_dir)
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", model_dir, "--resume", *settings)
    assert done.returncode == 2, done.stderr
    assert_clean_failure(done, f"error: {model_dir / 'checkpoint.npz'}: damaged checkpoint", reason)
    assert checkpoint_bytes(model_dir) == before
