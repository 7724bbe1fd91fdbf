"""Streaming preprocessing: pieces and workers change no byte, memory stays flat, failures leave nothing.

The shards' contents are checked against independent encodings of the real sample in
test_shards_and_batches.py; here the streaming machinery itself is put under stress:
tiny pieces and blocks on two workers must give the files one big piece on one process
gives, the dictionary must be the one counted from the whole file at once, and a bad line
or a killed worker must end in one error naming the file, with no staging directory and
no process left.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import AG_NEWS, REPO
from fasttext_horovod.data_pipeline import shards
from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.file_pieces import record_pieces
from fasttext_horovod.data_pipeline.readers import read_csv_records, read_records, read_records_of_piece
from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess

TRAIN = str(AG_NEWS / "train.csv")
SETTINGS = [CorpusSettings(bucket=100_000, word_ngrams=2, num_shards=4),
            CorpusSettings(min_count=2, bucket=1_000_000, word_ngrams=3, num_shards=3, valid_fraction=0.1,
                           split_seed=5)]


def corpus_contents(directory: str) -> dict:
    """Every file's bytes; `.npz` files as their arrays (a zip member stores its write time)."""
    contents = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(".npz"):
            with np.load(path) as arrays:
                contents[name] = {key: (arrays[key].dtype.str, arrays[key].tobytes()) for key in arrays.files}
        else:
            contents[name] = Path(path).read_bytes()
    return contents


@pytest.mark.parametrize("settings", SETTINGS, ids=["bigrams", "trigrams-min-count-2-held-out"])
def test_tiny_pieces_on_two_workers_give_the_bytes_of_one_piece_on_one_process(tmp_path, monkeypatch, settings):
    whole = preprocess(TRAIN, settings, str(tmp_path / "whole"), 4, workers=1)
    monkeypatch.setattr(shards, "_PIECE_BYTES", 4096)      # ~300 pieces, cut inside quoted fields' neighbourhood
    monkeypatch.setattr(shards, "_TOKENS_PER_BLOCK", 999)  # ~300 blocks
    streamed = preprocess(TRAIN, settings, str(tmp_path / "streamed"), 4, workers=2)
    assert corpus_contents(streamed.directory) == corpus_contents(whole.directory)
    assert os.path.basename(streamed.directory) == os.path.basename(whole.directory)


def test_the_dictionary_is_the_one_counted_from_the_whole_file_at_once(tmp_path, monkeypatch):
    """Words, ids, counts and labels as `Dictionary.build` over every record, in the file's order."""
    monkeypatch.setattr(shards, "_PIECE_BYTES", 10_000)
    settings = SETTINGS[0]
    ours = preprocess(TRAIN, settings, str(tmp_path), 4, workers=2).dictionary
    expected = Dictionary.build((r.tokens for r in read_records(TRAIN, 4)), bucket=settings.bucket,
                                word_ngrams=settings.word_ngrams)
    assert ours.words == expected.words and ours.labels == expected.labels
    np.testing.assert_array_equal(ours.word_counts, expected.word_counts)
    np.testing.assert_array_equal(ours.label_counts, expected.label_counts)
    assert ours.ntokens == expected.ntokens


def test_pieces_end_at_record_ends_even_with_newlines_inside_quoted_fields(tmp_path):
    rows = [b'"1","a title","line one\nline two, ""quoted"""\n', b'"2","t","plain"\n',
            b'"3","multi\n\nline title","x"\n'] * 40
    path = tmp_path / "quoted.csv"
    path.write_bytes(b"".join(rows))
    pieces = list(record_pieces(str(path), 50, 4))
    assert b"".join(p.data for p in pieces) == path.read_bytes()
    from_pieces = [(r.line, r.tokens) for p in pieces for r in read_records_of_piece(str(path), p.data,
                                                                                       p.first_line, 4)]
    assert from_pieces == [(r.line, r.tokens) for r in read_csv_records(str(path), 4)]
    assert len(pieces) > 40


def test_a_bad_line_in_a_late_piece_names_its_line_and_leaves_nothing(tmp_path, monkeypatch):
    lines = Path(TRAIN).read_bytes().splitlines(keepends=True)
    bad = lines[:5000] + [b'"9","t","d"\n'] + lines[5000:]
    path = tmp_path / "train.csv"
    path.write_bytes(b"".join(bad))
    monkeypatch.setattr(shards, "_PIECE_BYTES", 8192)
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=f"{path}:5001: class 9 is outside 1..4"):
        preprocess(str(path), SETTINGS[0], str(cache), 4, workers=2)
    assert [p.name for p in cache.iterdir()] == [".lock"]  # the builders' lock file (data_pipeline/staging.py) alone
    assert psutil.Process().children() == []


def synthetic_train_csv(tmp_path: Path, copies: int) -> Path:
    """`copies` times a synthetic Yelp-shaped corpus of 5,600 documents: same vocabulary, `copies` x the text."""
    from fasttext_horovod.data_pipeline.datasets import dataset_spec
    from fasttext_horovod.data_pipeline.synthetic import write_synthetic_dataset
    spec = dataset_spec("yelp_polarity")
    root = tmp_path / "data_synthetic"
    if not os.path.exists(spec.train_path(str(root))):
        write_synthetic_dataset(spec, str(root), 0.01)
    path = tmp_path / f"train_x{copies}.csv"
    path.write_bytes(Path(spec.train_path(str(root))).read_bytes() * copies)
    return path


def preprocessing_peak_mb(train: Path, cache: Path) -> float:
    """Peak resident memory of a fresh process preprocessing `train`: its own or its largest worker's.

    Measured inside that process (VmHWM, RUSAGE_CHILDREN): the kernel's count for a child
    seen from here would include this test process's size, which a vforked child carries
    across exec. glibc's mmap threshold is fixed there: left dynamic, it rises as large
    result buffers are freed, and the heap then keeps later ones after they are freed, a
    retention that depends on the order of frees. It moved the larger corpus's peak between
    216 and 232 MB from run to run; with the threshold fixed, 197 to 201 MB.
    """
    code = ("import sys, resource\n"
            "from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess\n"
            "preprocess(sys.argv[1], CorpusSettings(bucket=10_000_000, word_ngrams=2), sys.argv[2], 2)\n"
            "own = [int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
            "print(max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)\n")
    done = subprocess.run([sys.executable, "-c", code, str(train), str(cache)], cwd=REPO, capture_output=True,
                          text=True, check=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    return float(done.stdout)


@pytest.mark.slow
def test_a_four_times_larger_corpus_does_not_raise_the_preprocessing_peak(tmp_path):
    """Peak = dictionary + bounded buffers: 4x the documents over the same vocabulary costs a few percent.

    How full the bounded buffers get depends on scheduling, so each size keeps its lower
    peak of two runs; the smaller corpus has enough pieces and blocks to fill them (7 and 6,
    more than the 5 in flight), else it measures less than the bound. The allowance is the
    issue's 10% (Amazon against Yelp); holding the corpus, as preprocessing once did, took +88%.
    """
    small, large = synthetic_train_csv(tmp_path, 4), synthetic_train_csv(tmp_path, 16)
    small_peak = min(preprocessing_peak_mb(small, tmp_path / f"cache-small-{run}") for run in range(2))
    large_peak = min(preprocessing_peak_mb(large, tmp_path / f"cache-large-{run}") for run in range(2))
    assert large_peak <= 1.10 * small_peak, (small_peak, large_peak)


def test_a_worker_killed_mid_file_is_one_error_line_and_leaves_nothing(tmp_path):
    train = synthetic_train_csv(tmp_path, 6)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    cache = tmp_path / "cache"
    command = [sys.executable, str(REPO / "launch" / "train.py"), "--train", str(train), "--model-dir",
               str(tmp_path / "model"), "--cache-dir", str(cache), "--epoch", "1", "--dim", "5"]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL)
    parent, killed = psutil.Process(run.pid), None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and run.poll() is None:
        for worker in parent.children():
            try:
                worker.send_signal(signal.SIGKILL)
                killed = worker.pid
                break
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.01)
    stdout, stderr = run.communicate(timeout=120)
    assert killed is not None, "no worker process was seen"
    errors = [line for line in stderr.decode().splitlines() if line.startswith("error:")]
    assert run.returncode == 2, stderr.decode()[-2000:]
    assert len(errors) == 1 and f"error: {train}" in errors[0] and "worker died" in errors[0], errors
    assert "Traceback" not in stderr.decode()
    assert list(cache.glob(".building-*")) == [] and not (tmp_path / "model" / "checkpoint.npz").exists()
    assert processes_mentioning(str(train)) == []


def processes_mentioning(text: str):
    """Processes whose command line holds `text` (a forked worker keeps its parent's)."""
    return [p.pid for p in psutil.process_iter(["cmdline"]) if any(text in part for part in p.info["cmdline"] or [])]
