"""Synthetic corpora: the real datasets' layout and (scaled) sizes, Zipf-like words, learnable
labels, and a name and marker that say SYNTHETIC wherever they go.
"""
import csv
import json
import os
from collections import Counter

import numpy as np
import pytest
from conftest import run_cli

from fasttext_horovod.data_pipeline.datasets import DATASETS
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.readers import read_records
from fasttext_horovod.data_pipeline.synthetic import LENGTHS, SYNTHETIC_MARKER, is_synthetic, write_synthetic_dataset


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return tmp_path_factory.mktemp("corpora") / "data_synthetic"


@pytest.mark.parametrize("name, scale", [("yelp_polarity", 0.005), ("yahoo_answers", 0.001), ("ag_news", 0.02)])
def test_corpus_has_the_real_layout_scaled_counts_and_lengths(synthetic_root, name, scale):
    spec = DATASETS[name]
    directory = write_synthetic_dataset(spec, str(synthetic_root), scale)
    assert is_synthetic(directory) and "SYNTHETIC" in open(f"{directory}/{SYNTHETIC_MARKER}").read()
    for path, rows in ((spec.train_path(str(synthetic_root)), spec.train_rows),
                       (spec.test_path(str(synthetic_root)), spec.test_rows)):
        with open(path, newline="", encoding="utf-8") as handle:
            records = list(csv.reader(handle))
        assert len(records) == round(rows * scale)
        assert {len(r) for r in records} == {1 + spec.text_columns}
        assert {r[0] for r in records} <= {str(k) for k in range(1, spec.num_classes + 1)}
    tokens = [len(r.tokens) for r in read_records(spec.train_path(str(synthetic_root)), spec.num_classes)]
    assert np.mean(tokens) == pytest.approx(LENGTHS[name].mean_tokens, rel=0.1)
    classes = open(f"{directory}/classes.txt").read().split("\n")
    assert classes[0] == "synthetic class 1" and len([c for c in classes if c]) == spec.num_classes


def test_word_frequencies_are_zipf_like(tmp_path):
    """Rank-frequency slope on log-log axes near -1 over the 1,000 most frequent words."""
    root = str(tmp_path / "data_synthetic")
    write_synthetic_dataset(DATASETS["yelp_polarity"], root, 0.002)
    train = DATASETS["yelp_polarity"].train_path(root)
    counts = Counter(w for r in read_records(train) for w in r.words)
    top = np.array(sorted(counts.values(), reverse=True)[:1000], dtype=float)
    slope = np.polyfit(np.log(np.arange(1, len(top) + 1)), np.log(top), 1)[0]
    assert -1.3 < slope < -0.8


def test_refuses_a_data_root_not_named_synthetic(tmp_path):
    with pytest.raises(InputError, match="name says 'synthetic'"):
        write_synthetic_dataset(DATASETS["ag_news"], str(tmp_path / "data"), 0.01)
    assert not (tmp_path / "data").exists()


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """`synthesize.py --dataset ag_news --scale 0.05`: its data root and what it printed."""
    root = tmp_path_factory.mktemp("synthesized") / "data_synthetic"
    made = run_cli("synthesize", "--dataset", "ag_news", "--data-root", root, "--scale", "0.05")
    assert made.returncode == 0, made.stderr
    return root, made.stdout


def test_synthesize_cli_writes_a_corpus_marked_synthetic(synthesized):
    root, printed = synthesized
    assert "SYNTHETIC corpus of 6,380 documents" in printed
    assert is_synthetic(os.path.dirname(DATASETS["ag_news"].train_path(str(root))))


@pytest.mark.slow
def test_train_dataset_learns_the_synthetic_labels(synthesized, tmp_path):
    """`train.py --dataset ag_news --data-root <synthetic root>` on synthesize.py's corpus: well above chance."""
    root, _ = synthesized
    done = run_cli("train", "--dataset", "ag_news", "--data-root", root, "--model-dir", tmp_path / "model",
                   "--cache-dir", tmp_path / "cache", "--metrics-out", tmp_path / "metrics.json",
                   "--epoch", "5", "--dim", "10", "--bucket", "10000")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] > 0.7  # chance is 0.25
