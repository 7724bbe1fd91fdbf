"""Fuzzing dataset extraction: a real `*_csv.tar.gz` (built as Zhang et al.'s are), mutated
before and after compression; extraction must produce the dataset or refuse the archive
with one line (`InputError`), and leave nothing extracted when it refuses."""
import gzip
import io
import os
import shutil
from pathlib import Path

import pytest
from fuzzing import fuzz_settings, mutated, valid_or_refused, written
from hypothesis import given
from hypothesis import strategies as st
from test_download import TINY, build_archive

from fasttext_horovod.data_pipeline.download import extract_dataset
from fasttext_horovod.data_pipeline.errors import InputError

pytestmark = pytest.mark.slow  # thousands of generated cases (see the README's test tiers)

GZIP_CASES, TAR_CASES = 400, 800
VALID_ARCHIVE = build_archive(TINY)
VALID_TAR = gzip.decompress(VALID_ARCHIVE)
# The header fields of each tar member (name, mode, size, checksum, type) are 512-byte blocks' text.
TAR_FIELDS = [(offset + field, "<Q") for offset in range(0, len(VALID_TAR) - 512, 512) for field in (0, 100, 124, 148)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_archives")


def check_archive(archive: Path):
    """Extract `archive` into a fresh data root beside it; a refusal leaves nothing there."""
    data_root = archive.parent / "data"
    shutil.rmtree(data_root, ignore_errors=True)
    data_root.mkdir()
    placed = data_root / TINY.archive
    shutil.copy(archive, placed)
    rows = valid_or_refused(lambda: extract_dataset(str(placed), TINY, str(data_root)), placed, (InputError,))
    if rows is None:
        assert os.listdir(data_root) in ([], [TINY.archive])
    else:
        assert rows["train.csv"] == TINY.train_rows and rows["test.csv"] == TINY.test_rows


@fuzz_settings(GZIP_CASES)
@given(data=mutated(VALID_ARCHIVE))
def test_fuzzed_gzip_bytes_are_extracted_or_refused(workdir, data):
    path = written(workdir, "archive.tar.gz", data)
    check_archive(path)


@fuzz_settings(TAR_CASES)
@given(tar=mutated(VALID_TAR, TAR_FIELDS), level=st.sampled_from([1, 9]))
def test_fuzzed_tar_members_are_extracted_or_refused(workdir, tar, level):
    path = written(workdir, "archive.tar.gz", gzip.compress(tar, compresslevel=level))
    check_archive(path)


def test_gzip_bomb_is_refused_after_a_bounded_amount_of_output(tmp_path):
    """Zeros compress 1000:1: extraction stops at 20x the archive's size, long before the end."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as out:
        for _ in range(256):
            out.write(bytes(1 << 20))  # 256 MiB of zeros, a ~250 KB archive
    data_root = tmp_path / "data"
    data_root.mkdir()
    archive = data_root / TINY.archive
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="expands beyond 20x its size"):
        extract_dataset(str(archive), TINY, str(data_root))
    assert os.listdir(data_root) == []
