"""`--pretrained-vectors`: fastText's vocabulary rule, the rows it sets, and clear errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import AG_NEWS, TINY_SETTINGS, first_case_in_dev_tier, run_cli
from horovod_jobs import assert_same_weights, run, train_command

from fasttext_horovod.bench.fasttext_cpp import write_fasttext_format
from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.shards import CorpusSettings, preprocess
from fasttext_horovod.data_pipeline.vectors import read_vectors
from fasttext_horovod.model.checkpoint import load_checkpoint

DIM = 5
# fastText's vocabulary after training with pretrained vectors (one epoch at lr 0: the shortest
# run it allows), printed one word a line.
_FASTTEXT_VOCABULARY = r"""
import sys, fasttext
model = fasttext.train_supervised(sys.argv[1], pretrainedVectors=sys.argv[2], dim=int(sys.argv[3]), lr=0.0,
                                  epoch=1, minCount=int(sys.argv[4]), thread=1, verbose=0)
sys.stdout.buffer.write(b"\n".join(w.encode() for w in model.words))
"""


def write_vec(path, words, vectors):
    lines = [f"{len(words)} {vectors.shape[1]}"]
    lines += [w.decode() + " " + " ".join(f"{v:.6f}" for v in row) for w, row in zip(words, vectors)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def vec_file(tmp_path_factory, tiny_data_dir):
    """Vectors for some training words, a word training never sees, and a repeated word."""
    rng = np.random.default_rng(0)
    words = [b"the", b"stocks", b"oil", b"zzyzx-not-in-training", b"game", b"the"]
    return write_vec(tmp_path_factory.mktemp("vec") / "vectors.vec", words,
                     rng.normal(size=(len(words), DIM)).astype(np.float32))


@pytest.mark.fasttext
def test_vocabulary_matches_fasttext_with_pretrained_vectors(tmp_path, tiny_data_dir, vec_file):
    """fastText adds the .vec's words to the vocabulary (new ones with count 1) and re-sorts it."""
    train_txt = tmp_path / "train.txt"
    write_fasttext_format(str(tiny_data_dir / "train.csv"), str(train_txt))
    min_count = 2
    done = subprocess.run([sys.executable, "-c", _FASTTEXT_VOCABULARY, str(train_txt), str(vec_file), str(DIM),
                           str(min_count)], capture_output=True, check=True)
    theirs = done.stdout.split(b"\n")
    words = read_vectors(str(vec_file), DIM).words
    ours = preprocess(str(train_txt), CorpusSettings(min_count=min_count, bucket=1000), str(tmp_path / "cache"),
                      extra_words=words).dictionary.words
    assert b"zzyzx-not-in-training" in ours
    assert ours == theirs


def test_training_starts_from_the_vectors(tmp_path, tiny_data_dir, vec_file):
    """At a negligible lr nothing moves: the stored rows are the .vec's (the last of a repeated word)."""
    model_dir = tmp_path / "model"
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", model_dir, "--cache-dir",
                   tmp_path / "cache", "--pretrained-vectors", vec_file, "--dim", DIM, "--epoch", 1, "--lr", 1e-12)
    assert done.returncode == 0, done.stderr
    arrays, _ = load_checkpoint(str(model_dir / "checkpoint.npz"))
    vectors = read_vectors(str(vec_file), DIM)
    dictionary = Dictionary.from_arrays(arrays)
    rows = dict(zip(arrays["input_rows"].tolist(), arrays["input_values"]))
    for word, expected in ((b"zzyzx-not-in-training", vectors.vectors[3]), (b"the", vectors.vectors[5]),
                           (b"oil", vectors.vectors[2])):
        np.testing.assert_allclose(rows[dictionary.word_id(word)], expected, atol=1e-5)


@pytest.mark.slow
def test_vectors_of_a_model_trained_on_more_data_lift_a_short_run(tmp_path, tiny_data_dir):
    """Word vectors exported from a model trained on all 6,000 rows start a 1-epoch run on
    600 of them far ahead of fastText's random initialisation."""
    vec = tmp_path / "full.vec"
    done = run_cli("train", "--train", AG_NEWS / "train.csv", "--model-dir", tmp_path / "full", "--cache-dir",
                   tmp_path / "cache", "--dim", DIM, "--lr", 0.25)
    assert done.returncode == 0, done.stderr
    assert run_cli("export", "--model-dir", tmp_path / "full", "--vec", vec).returncode == 0
    accuracy = {}
    for name, extra in (("random", ()), ("pretrained", ("--pretrained-vectors", vec))):
        done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--test", tiny_data_dir / "test.csv",
                       "--model-dir", tmp_path / name, "--cache-dir", tmp_path / "cache", "--dim", DIM,
                       "--epoch", 1, "--lr", 0.1, "--metrics-out", tmp_path / f"{name}.json", *extra)
        assert done.returncode == 0, done.stderr
        accuracy[name] = json.loads((tmp_path / f"{name}.json").read_text())["accuracy"]
    assert accuracy["pretrained"] > accuracy["random"] + 0.3, accuracy


@pytest.mark.parametrize("content, message", first_case_in_dev_tier([
    ("", "empty file"),
    ("2 5\nthe 1 2 3 4 5\n", "promises 2 vectors of dimension 5, more than the 14 bytes after it can hold"),
    ("2 5\nthe 1 2 3 4 5\n" + " " * 30 + "\n", "promises 2 vectors, the file has 1"),
    ("1 5\nthe 1 2 3 4\n", ":2: expected a word and 5 numbers, got 5 fields"),
    ("1 5\nthe 1 2 x 4 5\n", ":2: a vector component is not a number"),
    ("1 5\nthe 1 2 nan 4 5\n", ":2: a vector component is not finite"),
    ("five 5\n", ":1: expected a header"),
    ("1 3\nthe 1 2 3\n", ":1: vectors have dimension 3, but the model's --dim is 5"),
]))
def test_bad_vec_file_is_a_clear_error(tmp_path, tiny_data_dir, content, message):
    vec = tmp_path / "bad.vec"
    vec.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_vectors(str(vec), DIM)
    model_dir = tmp_path / "model"
    done = run_cli("train", "--train", tiny_data_dir / "train.csv", "--model-dir", model_dir,
                   "--cache-dir", tmp_path / "cache", "--pretrained-vectors", vec, *TINY_SETTINGS)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {vec}")
    assert not (model_dir / "checkpoint.npz").exists()


@pytest.mark.horovod
@pytest.mark.slow
def test_two_horovod_ranks_start_from_the_vectors_as_one_process(tmp_path, tiny_data_dir, vec_file):
    """Rank 0 reads the vectors and broadcasts the rows: the same weights as one process."""
    runs = {}
    for controller, num_proc, batch in (("none", 1, 64), ("gloo", 2, 32)):
        runs[controller] = tmp_path / controller
        done = run(train_command(controller, num_proc, "--train", tiny_data_dir / "train.csv", "--model-dir",
                                 runs[controller], "--cache-dir", tmp_path / "cache", "--pretrained-vectors",
                                 vec_file, "--batch-size", batch, *TINY_SETTINGS))
        assert done.returncode == 0, done.stdout + done.stderr
    assert_same_weights(runs["gloo"], runs["none"])
