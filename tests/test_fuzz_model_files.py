"""Fuzzing the model loaders: fastText's `.bin` and `.ftz`, and our checkpoints.

The valid files are real: a `.bin` and a pruned, quantized `.ftz` that the `fasttext`
package trains on the sample, and a checkpoint of a dictionary built from the sample. Cases
mutate their bytes and their header fields (offsets found by parsing the valid file), and
for checkpoints also the arrays and metadata themselves (ids past the matrix, negative
buckets, wrong dtypes and shapes, NaN weights), saved as well-formed archives so the checks
behind the archive layer are reached. A loaded checkpoint must also build a model and
predict: that is where an unchecked row id used to corrupt MXNet's heap.
"""
import json
import os
import tempfile
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from conftest import AG_NEWS
from fuzzing import (
    INTERESTING,
    fuzz_settings,
    mutated,
    struct_fields,
    valid_or_refused,
    written,
)
from hypothesis import given
from hypothesis import strategies as st

fasttext = pytest.importorskip("fasttext")

from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.readers import read_records
from fasttext_horovod.model import fasttext_binary
from fasttext_horovod.model.checkpoint import (
    CheckpointError,
    checkpoint_meta,
    load_checkpoint,
    save_checkpoint,
)
from fasttext_horovod.model.fasttext_interop import _checkpoint_from_fasttext
from fasttext_horovod.model.inference import (
    encode_texts,
    predict,
    trained_model_from_arrays,
)

pytestmark = [pytest.mark.slow, pytest.mark.fasttext]  # thousands of generated cases (see the README's test tiers)

BIN_CASES, FTZ_CASES, CHECKPOINT_BYTE_CASES, CHECKPOINT_FIELD_CASES = 1500, 1000, 800, 700
ERRORS = (CheckpointError, InputError)
SAMPLE_TEXTS = [b"wall street stocks rally", b"the team won the final", b""]


def fasttext_files() -> dict:
    """A `.bin` and a pruned, quantized `.ftz` trained by fastText itself on the sample rows."""
    records = list(read_records(AG_NEWS / "train.csv"))[:400]
    with tempfile.TemporaryDirectory() as directory:
        text = os.path.join(directory, "train.txt")
        with open(text, "wb") as out:
            out.writelines(b" ".join(r.tokens[:-1]) + b"\n" for r in records)
        # thread >= 10: fastText 0.9.3 initialises only part of its matrix with fewer (see the brief)
        model = fasttext.train_supervised(input=text, dim=4, epoch=1, wordNgrams=2, bucket=500, thread=12, verbose=0)
        model.save_model(os.path.join(directory, "model.bin"))
        model.quantize(input=text, cutoff=300, retrain=False, qnorm=True, dsub=2, verbose=0)
        model.save_model(os.path.join(directory, "model.ftz"))
        return {name: Path(directory, name).read_bytes() for name in ("model.bin", "model.ftz")}


class _RecordingReader(fasttext_binary._Reader):
    """A reader that notes where each header field of the file lies."""

    def __init__(self, path, data):
        super().__init__(path, data)
        self.fields = []

    def unpack(self, layout):
        self.fields += struct_fields(self.pos, layout.format)
        return super().unpack(layout)


def header_fields(data: bytes):
    reader = _RecordingReader("valid", data)
    fasttext_binary._parse(reader)
    return reader.fields


FASTTEXT_FILES = fasttext_files()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_models")


def check_fasttext_file(path: Path):
    arrays, meta = valid_or_refused(lambda: _checkpoint_from_fasttext(str(path)), path, ERRORS) or (None, None)
    if arrays is not None:
        assert arrays["input_values"].shape[1] == meta["config"]["dim"]


@fuzz_settings(BIN_CASES)
@given(data=mutated(FASTTEXT_FILES["model.bin"], header_fields(FASTTEXT_FILES["model.bin"])))
def test_fuzzed_fasttext_bin_is_read_or_refused_with_one_line(workdir, data):
    path = written(workdir, "model.bin", data)
    check_fasttext_file(path)


@fuzz_settings(FTZ_CASES)
@given(data=mutated(FASTTEXT_FILES["model.ftz"], header_fields(FASTTEXT_FILES["model.ftz"])))
def test_fuzzed_fasttext_ftz_is_read_or_refused_with_one_line(workdir, data):
    path = written(workdir, "model.ftz", data)
    check_fasttext_file(path)


def sample_checkpoint():
    """(arrays, meta) of a small model over the sample's dictionary, as training writes them."""
    records = list(read_records(AG_NEWS / "train.csv"))[:200]
    dictionary = Dictionary.build([r.tokens for r in records], bucket=1000, word_ngrams=2)
    rng = np.random.default_rng(0)
    rows = np.flatnonzero(rng.random(dictionary.num_input_rows) < 0.5).astype(np.int64)
    arrays = {"input_rows": rows, "input_values": rng.normal(size=(len(rows), 4)).astype(np.float32),
              "output_matrix": rng.normal(size=(dictionary.nlabels, 4)).astype(np.float32),
              **dictionary.to_arrays()}
    config = {"train": "train.csv", "model_dir": "m", "lr": 0.1, "dim": 4, "epoch": 1, "word_ngrams": 2,
              "bucket": 1000, "min_count": 1, "loss": "softmax", "seed": 0}
    names = [label.decode()[len("__label__"):] for label in dictionary.labels]
    meta = checkpoint_meta(config, {"epoch": 1, "batch": 0, "tokens": 10, "step": 5}, True, names, 4, 1, None)
    return arrays, meta


ARRAYS, META = sample_checkpoint()


def checkpoint_bytes(arrays, meta) -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "checkpoint.npz")
        save_checkpoint(path, arrays, meta)
        return Path(path).read_bytes()


VALID_CHECKPOINT = checkpoint_bytes(ARRAYS, META)


def check_checkpoint(path: Path):
    """Load, build the model and predict; or a one-line refusal."""
    def use():
        arrays, meta = load_checkpoint(str(path))
        trained = trained_model_from_arrays(arrays, meta, mx.cpu())
        ranked = predict(trained.model, encode_texts(SAMPLE_TEXTS, trained.dictionary), 2, mx.cpu())
        mx.nd.waitall()
        return ranked
    ranked = valid_or_refused(use, path, ERRORS)
    if ranked is not None:
        assert len(ranked) == len(SAMPLE_TEXTS)


@fuzz_settings(CHECKPOINT_BYTE_CASES)
@given(data=mutated(VALID_CHECKPOINT))
def test_fuzzed_checkpoint_bytes_are_loaded_or_refused_with_one_line(workdir, data):
    path = written(workdir, "checkpoint.npz", data)
    check_checkpoint(path)


ODD_VALUES = st.sampled_from(INTERESTING) | st.sampled_from([None, "x", 1.5, float("nan"), [], {}, True])


@st.composite
def mutated_checkpoint(draw):
    """The sample checkpoint with one or two arrays or metadata fields changed."""
    arrays = dict(ARRAYS)
    meta = json.loads(json.dumps(META))
    for _ in range(draw(st.integers(1, 2))):
        target = draw(st.sampled_from(sorted(arrays) + ["config", "meta"]))
        if target == "config":
            meta["config"][draw(st.sampled_from(["dim", "loss", "seed"]))] = draw(ODD_VALUES)
        elif target == "meta":
            key = draw(st.sampled_from(["label_names", "progress", "world_size", "num_classes"]))
            meta[key] = draw(ODD_VALUES | st.just(["a"] * 3) | st.just({"epoch": -1}))
        else:
            array = arrays[target].copy()
            change = draw(st.sampled_from(["value", "dtype", "shorter", "longer", "drop", "2d"]))
            if change == "value" and array.size:
                at = draw(st.integers(0, array.size - 1))
                if array.dtype.kind == "f":
                    array.flat[at] = draw(st.sampled_from([np.nan, np.inf, 1e38]))
                else:  # the value wrapped into the element's bits, as a crafted file would hold it
                    array.view(f"u{array.itemsize}").flat[at] = draw(st.sampled_from(INTERESTING)) % (
                        1 << (8 * array.itemsize))
            elif change == "dtype":
                array = array.astype(draw(st.sampled_from([np.int32, np.float64, np.uint8, np.int64, np.float32])))
            elif change == "shorter":
                array = array[:-1]
            elif change == "longer":
                array = np.concatenate([array, array[-1:]])
            elif change == "2d":
                array = array.reshape(-1, 1)
            if change == "drop":
                del arrays[target]
            else:
                arrays[target] = array
    return arrays, meta


@fuzz_settings(CHECKPOINT_FIELD_CASES)
@given(checkpoint=mutated_checkpoint())
def test_fuzzed_checkpoint_fields_are_loaded_or_refused_with_one_line(workdir, checkpoint):
    path = written(workdir, "fields.npz", checkpoint_bytes(*checkpoint))
    check_checkpoint(path)
