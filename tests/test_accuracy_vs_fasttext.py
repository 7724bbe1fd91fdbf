"""Accuracy parity with fastText's C++ trainer on real text, same data and settings.

Both sides are noisy run to run (fastText's Hogwild threads, our seeds), by about half
a point on 1,600 test documents, so each side is the mean of several runs: ours over
fixed seeds (deterministic), fastText's over repeated runs, each in a fresh process.

fastText runs with 10 threads: 0.9.3 initialises only `thread` tenths of its input matrix
(see bench/fasttext_cpp.py), and with the rest left zero it scores lower than with the
whole matrix drawn, as ours is (AG bigrams, 16 runs: 0.8273 at 2 threads, 0.8299 at 10;
ours 0.8309 over 12 seeds under MXNet's sampler, 0.8320 under our blocked PCG64).
"""
import statistics

import numpy as np
import pytest
from conftest import AG_NEWS

pytest.importorskip("fasttext")

from fasttext_horovod.bench.fasttext_cpp import fasttext_copies, train_and_test
from fasttext_horovod.distributed.settings import TrainConfig
from fasttext_horovod.distributed.training import Trainer
from fasttext_horovod.distributed.world import World

OUR_SEEDS = range(6)
FASTTEXT_RUNS = 16
FASTTEXT_THREADS = 10  # the least that initialises its whole input matrix
TOLERANCE = 0.005  # half a point


def our_accuracy(tmp_path, word_ngrams, bucket, seed):
    config = TrainConfig(train=str(AG_NEWS / "train.csv"), test=str(AG_NEWS / "test.csv"),
                         model_dir=str(tmp_path / f"model-{word_ngrams}-{seed}"), cache_dir=str(tmp_path / "cache"),
                         lr=0.25, dim=10, epoch=5, word_ngrams=word_ngrams, bucket=bucket, seed=seed)
    return Trainer(config, World()).train()["accuracy"]


@pytest.mark.fasttext
@pytest.mark.slow
@pytest.mark.parametrize("word_ngrams, bucket", [(1, 0), (2, 10_000_000)], ids=["unigrams", "bigrams"])
def test_accuracy_matches_fasttext_cpp_within_half_a_point(tmp_path, word_ngrams, bucket):
    """dim 10, lr 0.25, 5 epochs, bucket 10M (fastText's CLI drops buckets for unigrams)."""
    train, test = fasttext_copies(str(AG_NEWS / "train.csv"), str(AG_NEWS / "test.csv"), str(tmp_path))
    ours = [our_accuracy(tmp_path, word_ngrams, bucket or 10_000_000, seed) for seed in OUR_SEEDS]
    theirs = [train_and_test(train, test, lr=0.25, dim=10, epoch=5, wordNgrams=word_ngrams, bucket=bucket,
                             thread=FASTTEXT_THREADS)["accuracy"] for _ in range(FASTTEXT_RUNS)]
    gap = statistics.mean(ours) - statistics.mean(theirs)
    print(f"ngrams={word_ngrams} ours {np.round(ours, 4)} fastText {np.round(theirs, 4)} gap {gap:+.4f}")
    assert abs(gap) <= TOLERANCE, f"mean accuracy {statistics.mean(ours):.4f} vs fastText {statistics.mean(theirs):.4f}"
