"""fastText's `quantize`: our `.ftz` loads in the `fasttext` package and predicts what we predict;
our pruning, product quantizer and file are fastText's own (checked against fastText quantizing
the same `.bin`); the small model is over 10x smaller at under a point of accuracy; bad settings
and bad files end with one clear line and leave nothing behind.
"""
import json
from dataclasses import replace

import mxnet as mx
import numpy as np
import pytest
from conftest import AG_NEWS, assert_clean_failure, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

fasttext = pytest.importorskip("fasttext")

from fasttext_horovod.bench.fasttext_cpp import fasttext_copies, train_and_test
from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.readers import EOS, read_records, tokenize
from fasttext_horovod.model.checkpoint import CheckpointError
from fasttext_horovod.model.fasttext_binary import read_fasttext_bin, write_fasttext_bin
from fasttext_horovod.model.fasttext_interop import load_fasttext_model, to_fasttext
from fasttext_horovod.model.inference import encode_texts, load_model_dir, predict
from fasttext_horovod.model.product_quantizer import QuantizedMatrix, l2_norm_rows
from fasttext_horovod.model.quantization import select_embeddings

SMOOTHING = 1e-5  # fastText reports exp(log(p + 1e-5)) as the probability
FULL_SAMPLE = ("--train", AG_NEWS / "train.csv", "--lr", "0.25", "--dim", "10", "--epoch", "5", "--word-ngrams", "2")


def train_model(root, bucket: int):
    """A bigram model trained by train.py on the whole real sample (6,000 documents)."""
    model_dir = root / "model"
    done = run_cli("train", *FULL_SAMPLE, "--bucket", bucket, "--model-dir", model_dir, "--cache-dir", root / "cache")
    assert done.returncode == 0, done.stderr
    return model_dir


def quantize(model_dir, output, *settings):
    """quantize.py on the real test file; returns its JSON summary."""
    metrics = output.with_suffix(".json")
    done = run_cli("quantize", "--model-dir", model_dir, "--output", output, "--test", AG_NEWS / "test.csv",
                   "--metrics-out", metrics, *settings)
    assert done.returncode == 0, done.stderr
    return json.loads(metrics.read_text())


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """bucket 20,000: ~42,000 input rows, quick to quantize whole."""
    return train_model(tmp_path_factory.mktemp("small_model"), 20_000)


@pytest.fixture(scope="module")
def test_text():
    """The real test documents as our reader normalises them (fastText's predict does not)."""
    return [b" ".join(r.words[:-1]) for r in read_records(AG_NEWS / "test.csv")]


def assert_fasttext_predicts_like_us(ftz, texts):
    """fastText's labels for every document, all ranked, equal ours from the same file;
    its probabilities are ours plus its smoothing."""
    theirs_labels, theirs_probs = fasttext.load_model(str(ftz)).predict([t.decode() for t in texts], k=-1)
    trained = load_fasttext_model(str(ftz), mx.cpu())
    ours = predict(trained.model, encode_texts(texts, trained.dictionary), -1, mx.cpu())
    names = trained.dictionary.labels
    for mine, labels, probs in zip(ours, theirs_labels, theirs_probs):
        assert [names[label].decode() for label, _ in mine] == list(labels)
        np.testing.assert_allclose([p + SMOOTHING for _, p in mine], probs, atol=1e-6)


# -- our .ftz in fastText ---------------------------------------------------------------------------
@pytest.mark.fasttext
@pytest.mark.parametrize("settings", [("--cutoff", "5000", "--qnorm"), ("--dsub", "3")],
                         ids=["pruned_qnorm", "unpruned_dsub3"])
def test_fasttext_loads_our_ftz_and_predicts_like_us(small_model, tmp_path, test_text, settings):
    """Pruned with quantized norms, and whole with a last column group of 1 (10 = 3 + 3 + 3 + 1)."""
    summary = quantize(small_model, tmp_path / "model.ftz", *settings)
    assert_fasttext_predicts_like_us(tmp_path / "model.ftz", test_text)
    rows = 5000 if "--cutoff" in settings else summary["input_rows_before"]
    assert summary["input_rows_after"] == rows == read_fasttext_bin(str(tmp_path / "model.ftz")).input_matrix.shape[0]


def test_reading_and_writing_an_ftz_gives_the_same_bytes(tiny_ftz, tmp_path):
    """A pruned .ftz with quantized norms and a last column group of 1 (dim 5 = 2 + 2 + 1)."""
    write_fasttext_bin(str(tmp_path / "again.ftz"), read_fasttext_bin(str(tiny_ftz)))
    assert (tmp_path / "again.ftz").read_bytes() == tiny_ftz.read_bytes()


@pytest.mark.slow
def test_smaller_groups_reconstruct_rows_better(small_model):
    """Product quantization of real rows: one byte per column beats one per 2, which beats one per 5."""
    rows = to_fasttext(load_model_dir(str(small_model), mx.cpu())).input_matrix[:20_000]
    errors = [np.mean((QuantizedMatrix.quantize(rows, dsub, False).dequantize() - rows) ** 2) for dsub in (1, 2, 5)]
    assert errors[0] < errors[1] < errors[2] < 0.2 * np.mean(rows ** 2)


# -- the target: 10x smaller, within a point ----------------------------------------------------------
@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """bucket 2M, cutoff 50,000, retrained, norms quantized."""
    root = tmp_path_factory.mktemp("target")
    model_dir = train_model(root, 2_000_000)
    summary = quantize(model_dir, root / "model.ftz", "--cutoff", "50000", "--qnorm", "--retrain",
                       "--train", AG_NEWS / "train.csv", "--cache-dir", root / "cache", "--logdir", root / "tb")
    return {"dir": root, "summary": summary}


@pytest.mark.slow
def test_quantized_model_is_10x_smaller_within_a_point_of_accuracy(target):
    summary = target["summary"]
    assert summary["bin_bytes"] >= 10 * summary["ftz_bytes"]
    assert summary["accuracy_after"] >= summary["accuracy_before"] - 0.01
    assert summary["n_test"] == 1600 and summary["input_rows_after"] == 50_000


@pytest.mark.slow
def test_retraining_and_summary_are_on_tensorboard(target):
    retrain = EventAccumulator(str(target["dir"] / "tb" / "retrain"))
    retrain.Reload()
    assert len(retrain.Scalars("train/loss")) >= 2
    summary = EventAccumulator(str(target["dir"] / "tb" / "quantize"))
    summary.Reload()
    for key in ("size_ratio", "accuracy_before", "accuracy_after", "ftz_bytes"):
        (event,) = summary.Scalars(f"quantize/{key}")
        assert event.value == pytest.approx(target["summary"][key], rel=1e-6)


@pytest.mark.slow
def test_bin_size_is_what_export_writes(target, tmp_path):
    done = run_cli("export", "--model-dir", target["dir"] / "model", "--fasttext", tmp_path / "model.bin")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "model.bin").stat().st_size == target["summary"]["bin_bytes"]
    assert (target["dir"] / "model.ftz").stat().st_size == target["summary"]["ftz_bytes"]


@pytest.mark.fasttext
@pytest.mark.slow
def test_evaluate_reads_the_ftz(target, tmp_path, test_text):
    done = run_cli("evaluate", "--fasttext-model", target["dir"] / "model.ftz", "--test", AG_NEWS / "test.csv",
                   "--metrics-out", tmp_path / "m.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == target["summary"]["accuracy_after"]
    assert_fasttext_predicts_like_us(target["dir"] / "model.ftz", test_text[:400])


# -- fastText quantizing the same .bin ---------------------------------------------------------------
FT_CUTOFF = 20_000


@pytest.fixture(scope="module")
def fasttext_quantized(tmp_path_factory):
    """A .bin trained by fastText (fresh process) and fastText's own .ftz of it (cutoff, qnorm, no retrain)."""
    out = tmp_path_factory.mktemp("fasttext_quantized")
    train_txt, test_txt = fasttext_copies(str(AG_NEWS / "train.csv"), str(AG_NEWS / "test.csv"), str(out))
    train_and_test(train_txt, test_txt, save_to=str(out / "model.bin"), lr=0.25, dim=10, epoch=5, wordNgrams=2,
                   bucket=200_000, thread=2)
    model = fasttext.load_model(str(out / "model.bin"))
    model.quantize(input=train_txt, cutoff=FT_CUTOFF, retrain=False, qnorm=True)
    model.save_model(str(out / "model.ftz"))
    return {"bin": read_fasttext_bin(str(out / "model.bin")), "ftz": read_fasttext_bin(str(out / "model.ftz")),
            "ftz_path": out / "model.ftz", "model": model, "test": test_txt, "accuracy": model.test(test_txt)[1]}


def dictionary_of(model) -> Dictionary:
    return Dictionary(model.words, model.word_counts, model.labels, model.label_counts, model.ntokens,
                      model.args.bucket, model.args.word_ngrams, model.pruneidx)


@pytest.mark.fasttext
def test_pruning_keeps_fasttexts_rows(fasttext_quantized):
    """Same words, same buckets, the n-gram rows in the same order up to rows of equal norm
    (whose order fastText's std::sort leaves as it happens to)."""
    source, theirs = fasttext_quantized["bin"], fasttext_quantized["ftz"]
    full = dictionary_of(source)
    kept = select_embeddings(source.input_matrix, full.word_id(EOS), FT_CUTOFF)
    pruned, rows = full.pruned(kept)
    assert len(rows) == pruned.num_input_rows == FT_CUTOFF == theirs.input_matrix.shape[0]
    assert pruned.words == theirs.words and pruned.labels == theirs.labels
    assert list(pruned.word_counts) == list(theirs.word_counts)
    assert set(pruned.pruneidx[:, 0]) == set(theirs.pruneidx[:, 0])
    their_buckets = theirs.pruneidx[np.argsort(theirs.pruneidx[:, 1]), 0]
    norms = l2_norm_rows(source.input_matrix)
    np.testing.assert_array_equal(norms[rows[pruned.nwords:]], norms[their_buckets + full.nwords])


@pytest.mark.fasttext
def test_our_quantizer_writes_fasttexts_ftz_byte_for_byte(fasttext_quantized, tmp_path):
    """fastText's pruned rows through our quantizer (k-means with fastText's random numbers) and
    writer give fastText's file exactly."""
    source, theirs = fasttext_quantized["bin"], fasttext_quantized["ftz"]
    full = dictionary_of(source)
    their_buckets = theirs.pruneidx[np.argsort(theirs.pruneidx[:, 1]), 0]
    rows = np.concatenate([[full.word_id(word) for word in theirs.words], their_buckets + full.nwords])
    ours = replace(theirs, input_matrix=QuantizedMatrix.quantize(source.input_matrix[rows], 2, True))
    write_fasttext_bin(str(tmp_path / "ours.ftz"), ours)
    assert (tmp_path / "ours.ftz").read_bytes() == fasttext_quantized["ftz_path"].read_bytes()


@pytest.mark.fasttext
def test_pruned_dictionary_encodes_like_fasttexts_getline(fasttext_quantized, test_text):
    """fastText's sentence vector of its .ftz averages the rows of its `getLine`; averaging the
    same rows over our encoding gives the same vector, so pruned words and n-grams are dropped alike."""
    theirs, model = fasttext_quantized["ftz"], fasttext_quantized["model"]
    pruned, full = dictionary_of(theirs), dictionary_of(fasttext_quantized["bin"])
    rows = theirs.input_matrix.dequantize()
    lines = [tokenize(text) for text in test_text[:300]]
    ids, offsets = pruned.encode_many(lines)
    assert len(ids) < 0.9 * len(full.encode_many(lines)[0])  # pruning dropped rows from these lines
    for line, start, end in zip(test_text, offsets[:-1], offsets[1:]):
        expected = model.get_sentence_vector(line.decode())
        ours = rows[ids[start:end]].mean(axis=0) if end > start else np.zeros_like(expected)
        np.testing.assert_allclose(ours, expected, atol=1e-5, err_msg=line.decode())


@pytest.mark.fasttext
def test_fasttexts_ftz_evaluates_and_predicts_the_same_here(fasttext_quantized, test_text, tmp_path):
    done = run_cli("evaluate", "--fasttext-model", fasttext_quantized["ftz_path"], "--test",
                   fasttext_quantized["test"], "--metrics-out", tmp_path / "m.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "m.json").read_text())
    assert (report["n_test"], report["accuracy"]) == (1600, fasttext_quantized["accuracy"])
    assert_fasttext_predicts_like_us(fasttext_quantized["ftz_path"], test_text)


# -- the pruned dictionary ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bigram_dictionary():
    texts = (b"__label__a the cat sat", b"__label__b the dog sat down", b"__label__a a cat")
    lines = [tokenize(text) for text in texts]
    return Dictionary.build(lines, bucket=1000, word_ngrams=2)


def test_prune_keeps_words_in_order_every_label_and_maps_buckets(bigram_dictionary):
    d = bigram_dictionary
    kept_words = [d.word_id(b"sat"), d.word_id(b"the")]
    pruned, rows = d.pruned([*kept_words, d.nwords + 700, d.nwords + 5])
    assert pruned.words == sorted([b"sat", b"the"], key=d.word_id)
    assert pruned.labels == d.labels and pruned.ntokens == d.ntokens
    assert pruned.pruneidx.tolist() == [[700, 0], [5, 1]]
    np.testing.assert_array_equal(rows, [*sorted(kept_words), d.nwords + 700, d.nwords + 5])
    assert pruned.num_input_rows == 4


def test_pruned_encoding_is_the_full_encoding_less_what_was_dropped(bigram_dictionary):
    d = bigram_dictionary
    line = tokenize(b"the cat sat down")
    full = d.encode(line)
    keep = full[::2]  # every other row of this line
    pruned, rows = d.pruned(keep)
    np.testing.assert_array_equal(rows[pruned.encode(line)], keep)
    words_only, _ = d.pruned([i for i in full if i < d.nwords])  # no bucket kept: no n-gram at all
    assert words_only.pruneidx.shape == (0, 2)
    assert all(i < words_only.nwords for i in words_only.encode(line))


def test_pruned_dictionary_round_trips_through_checkpoint_arrays(bigram_dictionary):
    pruned, _ = bigram_dictionary.pruned([0, bigram_dictionary.nwords + 3])
    again = Dictionary.from_arrays(pruned.to_arrays())
    np.testing.assert_array_equal(again.pruneidx, pruned.pruneidx)
    assert again.words == pruned.words and again.num_input_rows == 2
    assert "dict_pruneidx" not in bigram_dictionary.to_arrays()
    assert Dictionary.from_arrays(bigram_dictionary.to_arrays()).pruneidx is None


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    (("--cutoff", "0"), "error: --cutoff: must be at least 256"),
    (("--dsub", "0"), "error: --dsub: must be at least 1"),
    (("--cutoff", "1000", "--retrain"), "error: --retrain: needs --train"),
    (("--retrain", "--train", AG_NEWS / "train.csv"), "error: --retrain: needs --cutoff"),
    (("--cutoff", "1000", "--epoch", "2"), "error: --epoch: is used only with --retrain"),
    (("--qout",), "error: --qout: quantizing the output matrix needs at least 256 labels; the model has 4"),
], ids=["cutoff_0", "dsub_0", "retrain_without_train", "retrain_without_cutoff", "epoch_without_retrain",
        "qout_with_4_labels"])
def test_bad_settings_are_one_clear_error(tiny_model_dir, tmp_path, settings, message):
    done = run_cli("quantize", "--model-dir", tiny_model_dir, "--output", tmp_path / "model.ftz", *settings)
    assert_clean_failure(done, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_missing_or_unreadable_model_is_one_clear_error(tmp_path):
    missing = run_cli("quantize", "--model-dir", tmp_path / "absent", "--output", tmp_path / "model.ftz")
    assert_clean_failure(missing, f"error: {tmp_path / 'absent'}: no such model directory")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "checkpoint.npz").write_bytes(b"not a checkpoint")
    broken = run_cli("quantize", "--model-dir", tmp_path / "broken", "--output", tmp_path / "model.ftz")
    assert_clean_failure(broken, f"error: {tmp_path / 'broken' / 'checkpoint.npz'}: not a checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_retraining_on_another_file_is_refused(tiny_model_dir, tmp_path):
    done = run_cli("quantize", "--model-dir", tiny_model_dir, "--output", tmp_path / "model.ftz", "--cutoff", "1000",
                   "--retrain", "--train", AG_NEWS / "test.csv", "--cache-dir", tmp_path / "cache")
    assert_clean_failure(done, f"error: {AG_NEWS / 'test.csv'}: is not the file the model was trained on")
    assert not (tmp_path / "model.ftz").exists()


@pytest.fixture(scope="module")
def tiny_ftz(tmp_path_factory, tiny_model_dir):
    path = tmp_path_factory.mktemp("tiny_ftz") / "model.ftz"
    done = run_cli("quantize", "--model-dir", tiny_model_dir, "--output", path, "--cutoff", "1000", "--qnorm")
    assert done.returncode == 0, done.stderr
    return path


def _quantized_input_offset(path) -> int:
    """Where the quantized input matrix (its flag) starts: after the dictionary and pruneidx."""
    model = read_fasttext_bin(str(path))
    entries = sum(len(t) + 10 for t in model.words + model.labels)
    return 8 + 56 + 28 + entries + 8 * len(model.pruneidx)


CORRUPT_FTZ = {
    "truncated_codes": (lambda data, at: data[:at + 40], "truncated in the quantized input matrix"),
    "wrong_columns": (lambda data, at: data[:at + 10] + (7).to_bytes(8, "little") + data[at + 18:],
                      "corrupt quantized input matrix"),
    "pruneidx_out_of_range": (lambda data, at: data[:at - 8] + (10 ** 9).to_bytes(4, "little") + data[at - 4:],
                              "corrupt pruned dictionary"),
}


@pytest.mark.parametrize("case", list(CORRUPT_FTZ))
def test_corrupt_ftz_is_refused_naming_the_file(tiny_ftz, tmp_path, case):
    mutate, message = CORRUPT_FTZ[case]
    path = tmp_path / "bad.ftz"
    path.write_bytes(mutate(tiny_ftz.read_bytes(), _quantized_input_offset(tiny_ftz)))
    with pytest.raises(CheckpointError, match=f"^{path}: {message}"):
        read_fasttext_bin(str(path))


def test_pruned_dictionary_with_a_dense_input_matrix_is_refused(tiny_ftz, tmp_path):
    """fastText refuses this combination ("Invalid model file"); so do we."""
    model = read_fasttext_bin(str(tiny_ftz))
    data, at = tiny_ftz.read_bytes(), _quantized_input_offset(tiny_ftz)
    dense = model.input_matrix.dequantize()
    output = 1 + 16 + model.output_matrix.nbytes
    path = tmp_path / "dense.ftz"
    path.write_bytes(data[:at] + b"\0" + np.array(dense.shape, dtype="<i8").tobytes() + dense.astype("<f4").tobytes()
                     + data[-output:])
    with pytest.raises(CheckpointError, match=f"^{path}: pruned dictionary with an unquantized input matrix"):
        read_fasttext_bin(str(path))


def test_cli_corrupt_ftz_is_one_clear_error(tiny_ftz, tmp_path):
    path = tmp_path / "bad.ftz"
    path.write_bytes(tiny_ftz.read_bytes()[:-100])
    done = run_cli("evaluate", "--fasttext-model", path, "--test", AG_NEWS / "test.csv")
    assert_clean_failure(done, f"error: {path}: truncated")
