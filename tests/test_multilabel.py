"""Multi-label data and fastText's one-vs-all loss (`--loss ova`), on real AG News text.

The multi-label corpus is the bundled AG News sample with pairs of articles of different
classes merged into one document labelled with both (`launch/make_multilabel.py`). fastText's
own `train_supervised(loss='ova')` on the same file is the reference; it is nondeterministic
(Hogwild threads), so it runs several times in fresh processes (see bench/fasttext_cpp.py).
Measured at these settings (with the default --bucket): P@1 fastText 0.886-0.895 over 5
runs (mean 0.890), ours 0.874-0.887 over 5 seeds (0.882); at k = -1, threshold 0.5, R fastText
0.729-0.738 (0.733), ours 0.714-0.729 (0.721): ours sits about a point lower there, hence 3
points of tolerance.
"""
import csv
import json
import math
from pathlib import Path

import fasttext
import mxnet as mx
import numpy as np
import pytest
from conftest import AG_NEWS, run_cli
from horovod_jobs import assert_same_weights, run, train_command
from mxnet import autograd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fasttext_horovod.bench.fasttext_cpp import fasttext_copies, train_and_test
from fasttext_horovod.data_pipeline.batching import label_matrix, make_batch
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.merged_pairs import pair_documents
from fasttext_horovod.data_pipeline.normalize import normalize_csv_record
from fasttext_horovod.data_pipeline.readers import read_csv_records, read_fasttext_records, tokenize
from fasttext_horovod.model.fasttext import FastTextClassifier
from fasttext_horovod.model.metrics import classification_report
from fasttext_horovod.model.tensors import batch_tensors

# Our CLI and fastText's train_supervised with the same settings.
OVA_SETTINGS = ("--loss", "ova", "--epoch", "5", "--dim", "10", "--lr", "0.5", "--word-ngrams", "2",
                "--bucket", "100000")
FASTTEXT_SETTINGS = dict(loss="ova", epoch=5, dim=10, lr=0.5, wordNgrams=2, bucket=100000, thread=2)
FASTTEXT_RUNS = 3
TOLERANCE = {"top1": 0.02, "sets": 0.03}  # points of P and R (see the module docstring)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# -- the corpus -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    """train.csv / test.csv / classes.txt: the whole AG sample, merged in pairs."""
    out = tmp_path_factory.mktemp("ag_pairs")
    done = run_cli("make_multilabel", "--source", AG_NEWS, "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def label_sets(path: Path):
    return [record.labels for record in read_csv_records(path, num_classes=4)]


def test_merged_pairs_have_two_different_classes_or_one(pairs_dir):
    """Every document has one label or two different ones, and both kinds occur in quantity."""
    sizes = [len(set(labels)) for labels in label_sets(pairs_dir / "train.csv")]
    assert set(sizes) == {1, 2}
    assert 0.6 < sizes.count(2) / len(sizes) < 0.95
    assert (pairs_dir / "classes.txt").read_text() == (AG_NEWS / "classes.txt").read_text()


def test_pairing_uses_every_document_once_and_never_pairs_a_class_with_itself():
    classes = [str(1 + i % 4) for i in range(101)]
    groups = pair_documents(classes, seed=3, single_fraction=0.2)
    assert sorted(i for group in groups for i in group) == list(range(101))
    assert all(len({classes[i] for i in group}) == len(group) for group in groups)


# -- reading label sets -----------------------------------------------------------------------

def test_csv_label_column_with_several_classes_gives_one_label_token_each(tmp_path):
    """`"1,3"` and `"2 4"` become two `__label__` tokens; a single class is normalised as the script does."""
    path = tmp_path / "multi.csv"
    path.write_text('"1,3","Title One","Body."\n"2 4","T","B"\n"2","Plain","Row"\n')
    records = list(read_csv_records(path, num_classes=4))
    assert [r.labels for r in records] == [[b"__label__1", b"__label__3"], [b"__label__2", b"__label__4"],
                                          [b"__label__2"]]
    assert records[0].tokens == tokenize(b"__label__1 __label__3 , title one , body . ")
    assert records[2].tokens == tokenize(normalize_csv_record(["2", "Plain", "Row"]))


@pytest.mark.parametrize("row, message", [
    ('"","title","body"', "label column is empty"),
    ('" , ","title","body"', "label column is empty"),
    ('"1,x","title","body"', "label column '1,x' is not a class index"),
    ('"1,5","title","body"', "class 5 is outside 1..4"),
])
def test_bad_csv_label_sets_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text('"1","ok","row"\n' + row + "\n")
    with pytest.raises(InputError, match=f"^{path}:2: {message}"):
        list(read_csv_records(path, num_classes=4))


def test_fasttext_line_with_no_label_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("__label__a __label__b two labels\njust text\n")
    with pytest.raises(InputError, match=f"^{path}:2: line has no __label__ token"):
        list(read_fasttext_records(path))


def test_train_cli_rejects_an_empty_label_set(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text('"1,2","fine","row"\n"","no","class"\n')
    done = run_cli("train", "--train", train, "--model-dir", tmp_path / "model", "--cache-dir", tmp_path / "cache",
                   "--loss", "ova")
    assert done.returncode != 0
    assert f"error: {train}:2: label column is empty" in done.stderr


# -- the loss and its gradients ---------------------------------------------------------------

def fasttext_ova_update(input_matrix, output, line, labels, lr):
    """fastText's `Model::update` with `OneVsAllLoss::forward`, for one example (exact sigmoid).

    Returns (input matrix delta, output matrix delta, loss).
    """
    hidden = input_matrix[line].mean(axis=0)
    wo, grad, loss = output.astype(np.float64), np.zeros(hidden.shape), 0.0
    for i in range(len(wo)):
        label = float(i in labels)
        score = sigmoid(wo[i] @ hidden)
        alpha = lr * (label - score)
        grad += alpha * wo[i]
        wo[i] += alpha * hidden
        loss += -math.log(score if label else 1.0 - score)
    input_delta = np.zeros(input_matrix.shape)
    np.add.at(input_delta, line, grad / len(line))
    return input_delta, wo - output, loss


def tiny_batch(model, docs, sets):
    """A device batch of documents (input-row lists) with their label sets."""
    targets = label_matrix(np.concatenate(sets), np.array([len(s) for s in sets]))
    batch = make_batch(np.concatenate(docs), np.array([len(d) for d in docs]), targets, 0)
    ids, bag, targets = batch_tensors(batch, mx.cpu())
    return batch, bag, model.gather_rows(ids), targets


def tiny_model(loss, num_rows=6, dim=4, counts=(5, 3, 2)):
    model = FastTextClassifier(num_rows, dim, list(counts), loss, seed=1)
    model.initialize(ctx=mx.cpu())
    output = np.random.default_rng(0).normal(size=(len(counts), dim)).astype(np.float32)
    model.output_matrix.set_data(mx.nd.array(output))
    return model, output


@pytest.mark.parametrize("whole_block", [False, True])
def test_ova_gradients_are_fasttexts_per_example_update(whole_block):
    """-lr x the gradient of the batch loss = the sum of fastText's per-example ova updates, as the
    CPU computes it (`gradients`: compiled bag products) and differentiating the whole block (other devices)."""
    lr = 0.3
    model, output = tiny_model("ova")
    docs, sets = [np.array([0, 2, 2, 5]), np.array([1, 3])], [[0, 2], [1]]
    batch, bag, rows, targets = tiny_batch(model, docs, sets)
    if whole_block:
        rows.attach_grad(stype="row_sparse")  # as training does; MXNet's dense CSR backward drops repeated rows
        with autograd.record():
            loss = model(bag, rows, targets)
        loss.backward()
        row_grads = rows.grad
    else:
        loss, row_grads, _ = model.gradients(batch, mx.cpu())
    input_matrix = model.input_matrix.data().asnumpy()
    updates = [fasttext_ova_update(input_matrix, output, line, labels, lr) for line, labels in zip(docs, sets)]
    expected_input, expected_output, expected_loss = (sum(parts) for parts in zip(*updates))
    np.testing.assert_allclose(-lr * row_grads.asnumpy(), expected_input[batch.unique_ids], atol=1e-6)
    np.testing.assert_allclose(-lr * model.output_matrix.grad().asnumpy(), expected_output, atol=1e-6)
    assert loss.asscalar() == pytest.approx(expected_loss, rel=1e-5)


@pytest.mark.parametrize("loss", ["softmax", "hs", "ova"])
def test_document_loss_is_the_loss_against_the_whole_label_set(loss):
    """softmax/hs: mean over gold labels of -log p(label); ova: sum of every label's binary logistic loss."""
    model, output = tiny_model(loss)
    docs, sets = [np.array([0, 2, 2, 5]), np.array([1, 3])], [[0, 2], [1]]
    _, bag, rows, targets = tiny_batch(model, docs, sets)
    input_matrix = model.input_matrix.data().asnumpy()
    expected = []
    for line, labels in zip(docs, sets):
        scores = output @ input_matrix[line].mean(axis=0)
        if loss == "softmax":
            expected.append(np.mean([-np.log(np.exp(scores[y]) / np.exp(scores).sum()) for y in labels]))
        elif loss == "hs":
            tree = model.tree
            p = [np.prod([sigmoid(scores[n]) if c else 1 - sigmoid(scores[n])
                          for n, c in zip(tree.paths[y], tree.codes[y])]) for y in labels]
            expected.append(np.mean(-np.log(p)))
        else:
            expected.append(-sum(np.log(sigmoid(s) if y in labels else 1 - sigmoid(s)) for y, s in enumerate(scores)))
    np.testing.assert_allclose(model.document_losses(bag, rows, targets), expected, rtol=1e-5)


def test_ova_predicts_independent_sigmoids_above_the_threshold():
    """k = -1 returns every label whose sigmoid probability reaches the threshold, best first."""
    model, output = tiny_model("ova")
    _, bag, rows, _ = tiny_batch(model, [np.array([0, 4])], [[0]])
    probs = sigmoid(output @ model.input_matrix.data().asnumpy()[[0, 4]].mean(axis=0))
    [ranked] = model.top_k(bag, rows, -1, threshold=0.5)
    expected = sorted((i for i in range(3) if probs[i] >= 0.5), key=lambda i: -probs[i])
    assert [label for label, _ in ranked] == expected
    np.testing.assert_allclose([p for _, p in ranked], probs[expected], rtol=1e-5)
    assert len(model.top_k(bag, rows, -1)[0]) == 3


def test_precision_and_recall_count_predictions_made_and_gold_labels():
    """fastText's Meter: P = correct / predicted, R = correct / gold, per label too."""
    report = classification_report([[0, 2], [1], []], [[0], [1, 2], [3]], [1.0, 2.0, 3.0], num_labels=4, k=-1)
    assert (report.precision_at_k, report.recall_at_k) == (2 / 3, 2 / 4)
    assert report.accuracy == 2 / 3
    assert report.loss == 2.0
    np.testing.assert_array_equal(report.per_class_precision, [1, 1, 0, 0])
    np.testing.assert_array_equal(report.per_class_recall, [1, 1, 0, 0])


# -- end to end on the merged AG sample -------------------------------------------------------

@pytest.fixture(scope="module")
def ova_model(pairs_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ova_model")
    done = run_cli("train", "--train", pairs_dir / "train.csv", "--test", pairs_dir / "test.csv",
                   "--model-dir", root / "model", "--logdir", root / "tb", "--cache-dir", root / "cache",
                   "--metrics-out", root / "metrics.json", *OVA_SETTINGS)
    assert done.returncode == 0, done.stderr
    return root


def evaluate_ours(model_dir: Path, test: Path, k: str, threshold: str, out: Path) -> dict:
    done = run_cli("evaluate", "--model-dir", model_dir, "--test", test, "--k", k, "--threshold", threshold,
                   "--metrics-out", out)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def ours(ova_model, pairs_dir) -> dict:
    """Our P@k, R@k at k = 1 and at k = -1, threshold 0.5."""
    test = pairs_dir / "test.csv"
    return {"top1": evaluate_ours(ova_model / "model", test, "1", "0", ova_model / "top1.json"),
            "sets": evaluate_ours(ova_model / "model", test, "-1", "0.5", ova_model / "sets.json")}


@pytest.fixture(scope="module")
def fasttext_reference(pairs_dir, tmp_path_factory):
    """fastText's .bin models and its own P@k, R@k, over FASTTEXT_RUNS fresh-process runs."""
    root = tmp_path_factory.mktemp("fasttext_ova")
    train_txt, test_txt = fasttext_copies(str(pairs_dir / "train.csv"), str(pairs_dir / "test.csv"), str(root))
    runs = []
    for seed in range(FASTTEXT_RUNS):
        model_path = str(root / f"ova{seed}.bin")
        train_and_test(train_txt, test_txt, save_to=model_path, seed=seed, **FASTTEXT_SETTINGS)
        model = fasttext.load_model(model_path)
        runs.append({"top1": model.test(test_txt, k=1)[1:], "sets": model.test(test_txt, k=-1, threshold=0.5)[1:]})
    return {"runs": runs, "bin": root / "ova0.bin", "test_txt": test_txt}


@pytest.mark.slow
def test_ova_learns_label_sets_well_above_chance(ours):
    """Chance P@1 is 0.41 (1.64 gold labels of 4); R@1 cannot exceed 977 / 1600 = 0.61."""
    assert ours["top1"]["precision_at_k"] > 0.8
    assert ours["top1"]["recall_at_k"] > 0.5
    assert ours["sets"]["recall_at_k"] > 0.65  # label sets recover most second labels
    assert 0 < ours["top1"]["loss"] < 4 * math.log(2)  # below the zero-weight model's loss


@pytest.mark.fasttext
@pytest.mark.slow
@pytest.mark.parametrize("setting", ["top1", "sets"])
def test_ova_precision_and_recall_match_fasttext(ours, fasttext_reference, setting):
    """P@k and R@k near fastText's mean, at k = 1 and at k = -1 with threshold 0.5."""
    precision, recall = np.mean([run[setting] for run in fasttext_reference["runs"]], axis=0)
    assert ours[setting]["precision_at_k"] == pytest.approx(precision, abs=TOLERANCE[setting])
    assert ours[setting]["recall_at_k"] == pytest.approx(recall, abs=TOLERANCE[setting])


@pytest.mark.slow
def test_predict_returns_label_sets_above_the_threshold(ova_model, pairs_dir):
    """predict.py --k -1 --threshold 0.5: labels of probability >= 0.5, best first, often two of them."""
    with open(pairs_dir / "test.csv", encoding="utf-8", newline="") as handle:
        texts = [" ".join(fields[1:]) for fields, _ in zip(csv.reader(handle), range(40))]
    done = run_cli("predict", "--model-dir", ova_model / "model", "--k", "-1", "--threshold", "0.5",
                   input="\n".join(texts).encode() + b"\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(texts)
    predictions = [line.split() for line in lines]
    for labels, probs in ((p[0::2], [float(x) for x in p[1::2]]) for p in predictions):
        assert len(set(labels)) == len(labels) and probs == sorted(probs, reverse=True)
        assert all(prob >= 0.5 for prob in probs)
    assert sum(len(p) >= 4 for p in predictions) >= 10  # merged texts often get both labels


@pytest.mark.fasttext
def test_predict_reads_a_fasttext_ova_model(fasttext_reference):
    """predict.py --fasttext-model: the labels fastText's own predict gives (its sigmoid is a
    lookup table, so a probability right at the threshold may fall either way)."""
    texts = [line.split(" , ", 1)[1].strip() for line in Path(fasttext_reference["test_txt"]).read_text().splitlines()]
    texts = texts[:100]
    done = run_cli("predict", "--fasttext-model", fasttext_reference["bin"], "--k", "-1", "--threshold", "0.5",
                   input="\n".join(texts).encode() + b"\n")
    assert done.returncode == 0, done.stderr
    ours_sets = [set(line.split()[0::2]) for line in done.stdout.splitlines()]
    theirs, _ = fasttext.load_model(str(fasttext_reference["bin"])).predict(texts, k=-1, threshold=0.5)
    agree = sum(a == set(b) for a, b in zip(ours_sets, theirs))
    assert len(ours_sets) == len(texts) and agree >= 0.97 * len(texts)


@pytest.mark.slow
def test_tensorboard_precision_and_recall_are_the_final_report(ova_model):
    events = EventAccumulator(str(ova_model / "tb"))
    events.Reload()
    metrics = json.loads((ova_model / "metrics.json").read_text())
    for tag, key in (("test/precision_at_1", "precision_at_k"), ("test/recall_at_1", "recall_at_k")):
        logged = events.Scalars(tag)
        assert len(logged) == 5
        assert logged[-1].value == pytest.approx(metrics[key], abs=1e-6)


def test_k_must_be_positive_or_minus_one(tiny_model_dir):
    """A usage error whatever the model (the session's small one keeps this out of the slow tier)."""
    done = run_cli("predict", "--model-dir", tiny_model_dir, "--k", "0", input=b"text\n")
    assert done.returncode == 2 and "must be at least 1, or -1 for every label" in done.stderr


# -- under Horovod ----------------------------------------------------------------------------

@pytest.mark.horovod
@pytest.mark.slow
def test_two_ranks_train_ova_to_the_weights_of_one_process(pairs_dir, tmp_path):
    """horovodrun -np 2 --batch-size 32 ends where one process with --batch-size 64 does."""
    train = tmp_path / "train.csv"
    train.write_text("".join((pairs_dir / "train.csv").read_text().splitlines(keepends=True)[:800]))
    common = ("--train", train, "--cache-dir", tmp_path / "cache", "--loss", "ova", "--epoch", "2", "--dim", "5",
              "--lr", "0.5", "--word-ngrams", "2", "--bucket", "10000")
    for num_proc, batch_size in ((1, 64), (2, 32)):
        done = run(train_command("gloo", num_proc, *common, "--model-dir", tmp_path / f"np{num_proc}",
                                 "--batch-size", batch_size))
        assert done.returncode == 0, done.stderr
    assert_same_weights(tmp_path / "np2", tmp_path / "np1")
