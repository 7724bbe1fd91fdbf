"""The input matrix's initial values: fastText's seeded uniform, drawn straight into its storage,
which on the CPU is advised for huge pages."""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from fasttext_horovod.model.fasttext import CpuStorageParameter, FastTextClassifier, SeededUniform
from fasttext_horovod.model.tensors import host_view


class RecordingUniform(SeededUniform):
    """SeededUniform that remembers the arrays it filled."""

    def __init__(self, scale, seed):
        super().__init__(scale, seed)
        self.filled = []

    def _init_weight(self, name, arr):
        super()._init_weight(name, arr)
        self.filled.append(arr)


def test_cpu_parameter_keeps_the_array_its_initializer_filled():
    init = RecordingUniform(0.25, 3)
    param = CpuStorageParameter("kept", shape=(100, 4), init=init)
    param.initialize(ctx=mx.cpu())
    assert param.data().handle.value == init.filled[0].handle.value
    copied = RecordingUniform(0.25, 3)
    plain = gluon.Parameter("copied", shape=(100, 4), init=copied)
    plain.initialize(ctx=mx.cpu())
    assert plain.data().handle.value != copied.filled[0].handle.value  # what Gluon does by itself
    np.testing.assert_array_equal(param.data().asnumpy(), plain.data().asnumpy())


def test_model_input_matrix_is_the_seeded_uniform_and_a_parameter_of_the_block():
    model = FastTextClassifier(1000, 10, [3, 1], seed=7, prefix="fasttext_")
    model.initialize(ctx=mx.cpu())
    reference = gluon.Parameter("reference", shape=(1000, 10), init=SeededUniform(0.1, 7))
    reference.initialize(ctx=mx.cpu())
    np.testing.assert_array_equal(model.input_matrix.data().asnumpy(), reference.data().asnumpy())
    assert model.collect_params()["fasttext_input_matrix"] is model.input_matrix


def test_a_rows_initial_values_depend_on_the_seed_and_its_index_alone():
    """Checkpoints regenerate untouched rows from the seed, so a row's values cannot depend on
    the matrix's size or on how many threads drew it."""
    init = SeededUniform(0.1, 7)
    block = SeededUniform.BLOCK_ROWS
    large = np.empty((2 * block + 3, 4), np.float32)
    init.fill(large, threads=3)
    small = np.empty((block + 1, 4), np.float32)
    init.fill(small, threads=1)
    np.testing.assert_array_equal(small, large[:block + 1])
    assert -0.1 <= large.min() and large.max() < 0.1
    assert abs(large.mean()) < 1e-3 and abs(large.std() - 0.1 / np.sqrt(3)) < 1e-3  # uniform in +-0.1
    assert not np.array_equal(large[block:2 * block], large[:block])  # each block its own stream
    other_seed = np.empty_like(small)
    SeededUniform(0.1, 8).fill(other_seed)
    assert not np.array_equal(other_seed, small)


def _mapping_flags(address: int) -> list:
    """The VmFlags of this process's mapping that holds `address` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                start, end = (int(bound, 16) for bound in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "VmFlags:":
                return fields[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"),
                    reason="the kernel has no transparent huge pages")
def test_cpu_input_matrix_is_advised_for_huge_pages():
    """The random rows a step gathers and updates cost a page walk each on 4 KB pages (tensors.huge_page_zeros)."""
    model = FastTextClassifier(100_000, 10, [3, 1], seed=7)
    model.initialize(ctx=mx.cpu())
    address = host_view(model.input_matrix.data()).ctypes.data
    assert "hg" in _mapping_flags(address)
