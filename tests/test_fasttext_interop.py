"""fastText's `.bin` both ways: our exports load in the `fasttext` package and predict what we
predict; fastText's models import into model directories that evaluate, predict and continue
training like ours; bad files are refused with one clear line.
"""
import json
import shutil
import struct

import mxnet as mx
import numpy as np
import pytest
from conftest import AG_NEWS, assert_clean_failure, run_cli

fasttext = pytest.importorskip("fasttext")

from fasttext_horovod.bench.fasttext_cpp import fasttext_copies, train_and_test
from fasttext_horovod.data_pipeline.readers import read_records
from fasttext_horovod.distributed.settings import TrainConfig
from fasttext_horovod.distributed.training import Trainer
from fasttext_horovod.distributed.world import World
from fasttext_horovod.model.checkpoint import CheckpointError
from fasttext_horovod.model.fasttext_binary import read_fasttext_bin, write_fasttext_bin
from fasttext_horovod.model.fasttext_interop import to_fasttext
from fasttext_horovod.model.inference import encode_texts, load_model_dir, predict

SMOOTHING = 1e-5  # fastText reports exp(log(p + 1e-5)) as the probability


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    """The session's tiny model (bigrams, dim 5, bucket 10,000) exported by export.py."""
    out = tmp_path_factory.mktemp("exported")
    done = run_cli("export", "--model-dir", tiny_model_dir, "--fasttext", out / "model.bin", "--vec", out / "model.vec")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def normalised_test_text():
    """The real AG News test rows as our reader normalises them (fastText's predict does not)."""
    return [b" ".join(r.words[:-1]) for r in read_records(AG_NEWS / "test.csv")]


def assert_fasttext_predicts_like_ours(bin_path, model_dir, texts, k, smoothing):
    """Same labels in the same order; fastText's probability is ours plus its `smoothing`."""
    theirs_labels, theirs_probs = fasttext.load_model(str(bin_path)).predict([t.decode() for t in texts], k=k)
    trained = load_model_dir(str(model_dir), mx.cpu())
    ours = predict(trained.model, encode_texts(texts, trained.dictionary), k, mx.cpu())
    names = trained.dictionary.labels
    assert len(ours) == len(theirs_labels) == len(texts)
    for mine, labels, probs in zip(ours, theirs_labels, theirs_probs):
        assert [names[label].decode() for label, _ in mine] == list(labels)
        np.testing.assert_allclose([p + smoothing for _, p in mine], probs, atol=1e-6)


@pytest.mark.fasttext
def test_exported_bin_predicts_like_ours_in_fasttext(exported, tiny_model_dir, normalised_test_text):
    """All 1,600 real test documents, all four labels ranked."""
    assert_fasttext_predicts_like_ours(exported / "model.bin", tiny_model_dir, normalised_test_text, 4, SMOOTHING)


@pytest.mark.fasttext
def test_exported_args_and_dictionary_are_what_we_trained(exported, tiny_model_dir):
    model = fasttext.load_model(str(exported / "model.bin"))
    args = model.f.getArgs()
    assert (args.dim, args.epoch, args.wordNgrams, args.bucket, args.minCount, args.minn, args.maxn) == \
        (5, 2, 2, 10_000, 1, 0, 0)
    assert (args.loss.name, args.model.name, args.ws, args.neg, args.lrUpdateRate) == \
        ("softmax", "supervised", 5, 5, 100)
    assert args.t == pytest.approx(1e-4)
    trained = load_model_dir(str(tiny_model_dir), mx.cpu())
    words, counts = model.get_words(include_freq=True)
    assert [w.encode() for w in words] == trained.dictionary.words
    assert list(counts) == list(trained.dictionary.word_counts)
    assert [label.encode() for label in model.get_labels()] == trained.dictionary.labels
    np.testing.assert_array_equal(model.get_input_matrix(), trained.model.input_matrix.data().asnumpy())
    np.testing.assert_array_equal(model.get_output_matrix(), trained.model.output_matrix.data().asnumpy())


def test_reading_and_writing_back_gives_the_same_bytes(exported, tmp_path):
    write_fasttext_bin(str(tmp_path / "again.bin"), read_fasttext_bin(str(exported / "model.bin")))
    assert (tmp_path / "again.bin").read_bytes() == (exported / "model.bin").read_bytes()


@pytest.mark.fasttext
def test_vec_file_is_fasttexts_text_format(exported):
    model = fasttext.load_model(str(exported / "model.bin"))
    lines = (exported / "model.vec").read_bytes().split(b"\n")
    assert lines[0] == f"{len(model.words)} 5".encode() and lines[-1] == b""
    for word, line in zip(model.words, lines[1:-1]):
        fields = line.split(b" ")
        assert fields[0] == word.encode() and fields[-1] == b""  # fastText writes a space after every value
        np.testing.assert_allclose([float(v) for v in fields[1:-1]], model.get_word_vector(word), rtol=1e-4, atol=1e-9)


@pytest.mark.fasttext
def test_hierarchical_softmax_model_exports_exactly(tmp_path, tiny_data_dir, normalised_test_text):
    config = TrainConfig(train=str(tiny_data_dir / "train.csv"), model_dir=str(tmp_path / "hs"),
                         cache_dir=str(tmp_path / "cache"), loss="hs", dim=5, epoch=2, word_ngrams=2, bucket=10_000,
                         lr=0.25)
    Trainer(config, World()).train()
    write_fasttext_bin(str(tmp_path / "hs.bin"), to_fasttext(load_model_dir(config.model_dir, mx.cpu())))
    # Our hierarchical-softmax search already reports fastText's smoothed probabilities.
    assert_fasttext_predicts_like_ours(tmp_path / "hs.bin", config.model_dir, normalised_test_text[:400], 2, 0.0)


@pytest.fixture(scope="module")
def fasttext_trained(tmp_path_factory):
    """A model trained by the fasttext package (fresh process) on the real sample, its test() result."""
    out = tmp_path_factory.mktemp("fasttext_trained")
    train_txt, test_txt = fasttext_copies(str(AG_NEWS / "train.csv"), str(AG_NEWS / "test.csv"), str(out))
    result = train_and_test(train_txt, test_txt, save_to=str(out / "model.bin"), lr=0.25, dim=10, epoch=5,
                            wordNgrams=2, bucket=200_000, thread=2)
    imported = out / "imported"
    done = run_cli("import_fasttext", "--fasttext-model", out / "model.bin", "--model-dir", imported, "--lr", "0.25")
    assert done.returncode == 0, done.stderr
    return {"dir": out, "train": train_txt, "test": test_txt, "imported": imported, **result}


@pytest.mark.fasttext
@pytest.mark.parametrize("source", ["imported_model_dir", "bin_directly"])
def test_imported_model_evaluates_to_fasttexts_own_accuracy(fasttext_trained, tmp_path, source):
    model = (("--model-dir", fasttext_trained["imported"]) if source == "imported_model_dir"
             else ("--fasttext-model", fasttext_trained["dir"] / "model.bin"))
    done = run_cli("evaluate", *model, "--test", fasttext_trained["test"], "--metrics-out", tmp_path / "m.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["n_test"] == fasttext_trained["n_test"] == 1600
    assert report["accuracy"] == fasttext_trained["accuracy"]


@pytest.mark.fasttext
@pytest.mark.slow
def test_training_continues_from_an_imported_model(fasttext_trained, tmp_path):
    """train.py --resume on the imported directory: 5 more epochs from fastText's weights."""
    model_dir = shutil.copytree(fasttext_trained["imported"], tmp_path / "continued")
    done = run_cli("train", "--train", fasttext_trained["train"], "--test", fasttext_trained["test"],
                   "--model-dir", model_dir, "--cache-dir", tmp_path / "cache", "--resume", "--lr", "0.25",
                   "--dim", "10", "--epoch", "5", "--word-ngrams", "2", "--bucket", "200000",
                   "--metrics-out", tmp_path / "m.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] >= fasttext_trained["accuracy"] - 0.01


# -- bad files -------------------------------------------------------------------------------------
def _patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt):]


BAD_FILES = {
    "empty": (lambda data: b"", "not a fastText model"),
    "text_file": (lambda data: b"__label__1 this is not a model\n" * 10, "not a fastText model (magic number"),
    "other_version": (lambda data: _patched(data, 4, "<i", 11), "format version 11; this reads version 12"),
    "character_ngrams": (lambda data: _patched(data, 8 + 4 * 10, "<i", 6), "character n-grams"),
    "unsupervised": (lambda data: _patched(data, 8 + 4 * 7, "<i", 2), "not a classifier"),
    "negative_sampling": (lambda data: _patched(data, 8 + 4 * 6, "<i", 2), "loss ns is not supported"),
    "truncated": (lambda data: data[:len(data) // 2], "truncated"),
    "trailing_bytes": (lambda data: data + b"\0\0", "2 unexpected bytes"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_bin_files_are_refused_with_the_reason(exported, tmp_path, case):
    mutate, message = BAD_FILES[case]
    path = tmp_path / "bad.bin"
    path.write_bytes(mutate((exported / "model.bin").read_bytes()))
    with pytest.raises(CheckpointError, match=f"^{path}: .*{message}".replace("(", r"\(")):
        read_fasttext_bin(str(path))


def test_quantized_model_is_refused(exported, tmp_path):
    data = (exported / "model.bin").read_bytes()
    model = read_fasttext_bin(str(exported / "model.bin"))
    matrices = 2 * (1 + 16) + 4 * (model.input_matrix.size + model.output_matrix.size)
    path = tmp_path / "quantized.bin"
    path.write_bytes(_patched(data, len(data) - matrices, "<?", True))
    with pytest.raises(CheckpointError, match="quantized input matrix"):
        read_fasttext_bin(str(path))


@pytest.mark.slow
def test_cli_bad_bin_is_one_clear_error(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"not a model at all")
    done = run_cli("evaluate", "--fasttext-model", path, "--test", AG_NEWS / "test.csv")
    assert_clean_failure(done, f"error: {path}: not a fastText model (magic number")
    missing = run_cli("import_fasttext", "--fasttext-model", tmp_path / "absent.bin", "--model-dir", tmp_path / "m")
    assert_clean_failure(missing, f"error: {tmp_path / 'absent.bin'}: no such file")
    assert not (tmp_path / "m").exists()


def test_import_refuses_to_overwrite_a_model(exported, tiny_model_dir, tmp_path):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "existing")
    before = (model_dir / "checkpoint.npz").read_bytes()
    done = run_cli("import_fasttext", "--fasttext-model", exported / "model.bin", "--model-dir", model_dir)
    assert_clean_failure(done, "checkpoint.npz: exists; import into a new --model-dir")
    assert (model_dir / "checkpoint.npz").read_bytes() == before



@pytest.mark.slow
def test_predict_normalises_raw_text_for_a_fasttext_model_when_told(exported, tiny_model_dir):
    """A CSV-trained model exported to fastText predicts raw text as our model directory does
    once --normalize-input says the text needs normalising (the file cannot say so itself)."""
    raw = b"Stocks RALLY as OIL prices fall (Reuters): investors cheer!\nNBA finals: Lakers win, again.\n"
    ours = run_cli("predict", "--model-dir", tiny_model_dir, "--k", 2, input=raw)
    theirs = run_cli("predict", "--fasttext-model", exported / "model.bin", "--normalize-input", "--k", 2, input=raw)
    unnormalised = run_cli("predict", "--fasttext-model", exported / "model.bin", "--k", 2, input=raw)
    assert ours.returncode == theirs.returncode == unnormalised.returncode == 0, ours.stderr + theirs.stderr
    assert theirs.stdout == ours.stdout
    assert unnormalised.stdout != ours.stdout
