"""The entry points as a user runs them: evaluate and predict on a trained model."""
import json

import pytest
from conftest import AG_NEWS, run_cli


def test_evaluate_reports_the_accuracy_training_measured(tiny_model_dir, tiny_data_dir, tmp_path):
    """Same model, same test file: evaluate.py and the training run's final metrics agree."""
    trained = json.loads((tiny_model_dir / "metrics.json").read_text())
    done = run_cli("evaluate", "--model-dir", tiny_model_dir, "--test", tiny_data_dir / "test.csv", "--k", "2",
                   "--metrics-out", tmp_path / "eval.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-9)
    assert report["n_test"] == 200 and report["k"] == 2
    assert report["recall_at_k"] >= report["accuracy"]  # a second guess can only add hits
    assert sum(map(sum, report["confusion_matrix"])) == 200
    assert f"P@2\t{report['precision_at_k']:.3f}" in done.stdout


def test_training_metrics_json_has_the_documented_keys(tiny_model_dir):
    metrics = json.loads((tiny_model_dir / "metrics.json").read_text())
    for key in ("accuracy", "precision_at_k", "recall_at_k", "n_test", "train_seconds", "examples_per_second",
                "tokens_per_second"):
        assert key in metrics
    assert 0 <= metrics["accuracy"] <= 1 and metrics["examples_per_second"] > 0


def test_predict_prints_k_labels_with_probabilities_for_every_line(tiny_model_dir):
    lines = ["Stocks fell sharply on Wall Street after the Fed raised rates.",
             "The Red Sox won the World Series!", "", "An unseen-word-only line: zxqv"]
    done = run_cli("predict", "--model-dir", tiny_model_dir, "--k", "3", input="\n".join(lines).encode() + b"\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert len(out) == len(lines)
    for line in out:
        fields = line.split()
        labels, probs = fields[0::2], [float(p) for p in fields[1::2]]
        assert len(labels) == 3 and all(label.startswith("__label__") for label in labels)
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-4


@pytest.mark.slow
def test_predict_threshold_drops_unlikely_labels(tiny_model_dir, tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("Oil prices hit a record as markets slide\n")
    everything = run_cli("predict", "--model-dir", tiny_model_dir, "--input", text, "--k", "4")
    confident = run_cli("predict", "--model-dir", tiny_model_dir, "--input", text, "--k", "4", "--threshold", "0.3")
    assert everything.returncode == confident.returncode == 0
    kept = [float(p) for p in confident.stdout.split()[1::2]]
    assert len(everything.stdout.split()) == 8 and all(p >= 0.3 for p in kept) and len(kept) < 4


@pytest.mark.slow
def test_default_batch_keeps_the_papers_highest_lr_from_diverging(tmp_path):
    """lr 0.5 (the paper's Sogou and DBPedia rate) diverges at 64 documents a step on AG News;
    without --batch-size the step sums fewer, and training converges."""
    common = ("--train", AG_NEWS / "train.csv", "--test", AG_NEWS / "test.csv", "--cache-dir", tmp_path / "cache",
              "--lr", 0.5, "--dim", 10, "--epoch", 5)
    diverged = run_cli("train", *common, "--model-dir", tmp_path / "b64", "--batch-size", 64)
    assert diverged.returncode == 2 and "loss became" in diverged.stderr, diverged.stderr
    done = run_cli("train", *common, "--model-dir", tmp_path / "default", "--metrics-out", tmp_path / "m.json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["global_batch_size"] == 32 and metrics["accuracy"] > 0.8
