"""A checkpoint's touched input rows are written a block of rows at a time, as the same `.npy`
bytes as the whole array, so the trainer never holds a copy of them all."""
import io
import os
import zipfile

import mxnet as mx
import numpy as np
import pytest

from fasttext_horovod.model import fasttext
from fasttext_horovod.model.checkpoint import RowBlocks, save_checkpoint


def member_bytes(path, name):
    with zipfile.ZipFile(path) as archive:
        return archive.read(name + ".npy")


def test_row_blocks_write_the_bytes_of_the_whole_array(tmp_path):
    whole = np.arange(70, dtype=np.float32).reshape(7, 10)
    blocks = RowBlocks(whole.shape, np.float32, lambda: (whole[start:start + 3] for start in range(0, 7, 3)))
    path = tmp_path / "blocks.npz"
    save_checkpoint(str(path), {"values": blocks}, meta={})
    expected = io.BytesIO()
    np.lib.format.write_array(expected, whole, allow_pickle=False)
    assert member_bytes(path, "values") == expected.getvalue()
    np.testing.assert_array_equal(np.load(path)["values"], whole)


@pytest.mark.parametrize("rows", [6, 8])
def test_row_blocks_of_the_wrong_length_leave_no_file(tmp_path, rows):
    blocks = RowBlocks((7, 2), np.float32, lambda: [np.zeros((rows, 2), np.float32)])
    with pytest.raises(ValueError, match="rows written"):
        save_checkpoint(str(tmp_path / "short.npz"), {"values": blocks}, meta={})
    assert os.listdir(tmp_path) == []


def test_model_state_holds_the_touched_rows_read_block_by_block(tmp_path, monkeypatch):
    monkeypatch.setattr(fasttext, "_ROWS_PER_COPY", 4)  # 11 touched rows: blocks of 4, 4 and 3
    model = fasttext.FastTextClassifier(50, 3, [2, 1], seed=5, prefix="blocks_")
    model.initialize(ctx=mx.cpu())
    touched = np.zeros(50, dtype=bool)
    touched[[0, 3, 4, 9, 17, 18, 20, 31, 40, 48, 49]] = True
    arrays = model.state_arrays(touched)
    path = tmp_path / "state.npz"
    save_checkpoint(str(path), arrays, meta={})
    saved = np.load(path)
    np.testing.assert_array_equal(saved["input_rows"], np.flatnonzero(touched))
    np.testing.assert_array_equal(saved["input_values"], model.input_matrix.data().asnumpy()[touched])
