"""Fuzzing the text readers: Zhang et al. CSV, fastText `__label__` lines and `.vec` vectors.

Each case is a real file from samples/ag_news_mini, mutated (see `fuzzing`); the reader must
return records (or vectors) or raise `InputError` with one line naming the file. Records
that come back must also build a dictionary and encode, as training would use them.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import AG_NEWS
from fuzzing import INTERESTING, fuzz_settings, mutated, valid_or_refused, written
from hypothesis import given
from hypothesis import strategies as st

from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.readers import read_records
from fasttext_horovod.data_pipeline.vectors import read_vectors
from fasttext_horovod.model.fasttext_binary import write_vec

pytestmark = pytest.mark.slow  # thousands of generated cases (see the README's test tiers)

CSV_CASES, FASTTEXT_CASES, VEC_CASES = 3000, 2500, 2000
DIM = 4


def sample_csv(rows: int = 30) -> bytes:
    with open(AG_NEWS / "train.csv", "rb") as handle:
        return b"".join(line for _, line in zip(range(rows), handle))


def sample_fasttext_lines() -> bytes:
    """The sample rows as fastText reads them: `__label__N` then the normalised words."""
    return b"".join(b" ".join(record.tokens[:-1]) + b"\n" for record in read_records(AG_NEWS / "train.csv"))[:6000]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz_text")
    (directory / "classes.txt").write_bytes((AG_NEWS / "classes.txt").read_bytes())
    return directory


def read_and_encode(path: Path, num_classes=None):
    records = list(read_records(path, num_classes))
    dictionary = Dictionary.build([r.tokens for r in records], bucket=1000, word_ngrams=2)
    ids, offsets = dictionary.encode_many([r.words for r in records])
    assert offsets[-1] == len(ids) and (len(ids) == 0 or 0 <= ids.min() <= ids.max() < dictionary.num_input_rows)
    return records


@fuzz_settings(CSV_CASES)
@given(data=mutated(sample_csv()))
def test_fuzzed_csv_is_read_or_refused_with_one_line(workdir, data):
    path = written(workdir, "train.csv", data)
    valid_or_refused(lambda: read_and_encode(path, num_classes=4), path, (InputError,))


@fuzz_settings(FASTTEXT_CASES)
@given(data=mutated(sample_fasttext_lines()))
def test_fuzzed_fasttext_lines_are_read_or_refused_with_one_line(workdir, data):
    path = written(workdir, "train.txt", data)
    valid_or_refused(lambda: read_and_encode(path), path, (InputError,))


def sample_vec() -> bytes:
    """A real `.vec` as write_vec writes it: 20 sample words, random vectors."""
    words = [w for r in read_records(AG_NEWS / "test.csv") for w in r.words][:20]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "sample.vec")
        write_vec(path, words, np.random.default_rng(0).normal(size=(len(words), DIM)).astype(np.float32))
        with open(path, "rb") as handle:
            return handle.read()


VALID_VEC = sample_vec()
BODY = VALID_VEC.split(b"\n", 1)[1]
# Headers that promise what the body cannot hold, or nonsense.
headers = st.tuples(st.sampled_from(INTERESTING) | st.integers(0, 40), st.sampled_from(INTERESTING) | st.just(DIM))


@fuzz_settings(VEC_CASES)
@given(data=mutated(VALID_VEC) | headers.map(lambda h: b"%d %d\n" % h + BODY))
def test_fuzzed_vec_is_read_or_refused_with_one_line(workdir, data):
    path = written(workdir, "vectors.vec", data)
    vectors = valid_or_refused(lambda: read_vectors(str(path), DIM), path, (InputError,))
    if vectors is not None:
        assert vectors.vectors.shape == (len(vectors.words), DIM) and np.isfinite(vectors.vectors).all()
