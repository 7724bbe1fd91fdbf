"""Every input a fuzz test ever failed on, shrunk and kept under `tests/fuzz_regressions/<reader>/`,
replayed through the same check: once fixed, a failure stays fixed."""
from pathlib import Path

import pytest
from fuzzing import REGRESSIONS, valid_or_refused
from test_fuzz_archives import check_archive
from test_fuzz_model_files import check_checkpoint, check_fasttext_file
from test_fuzz_text_readers import DIM, read_and_encode

from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.vectors import read_vectors

CHECKS = {
    "csv": lambda path: valid_or_refused(lambda: read_and_encode(path, num_classes=4), path, (InputError,)),
    "txt": lambda path: valid_or_refused(lambda: read_and_encode(path), path, (InputError,)),
    "vec": lambda path: valid_or_refused(lambda: read_vectors(str(path), DIM), path, (InputError,)),
    "bin": check_fasttext_file,
    "ftz": check_fasttext_file,
    "checkpoint": check_checkpoint,
    "archive": check_archive,
}
CASES = sorted(p.relative_to(REGRESSIONS) for p in REGRESSIONS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kept_fuzz_failure_is_handled(tmp_path, case: Path):
    reader = case.parts[0]
    path = tmp_path / case.name
    path.write_bytes((REGRESSIONS / case).read_bytes())
    CHECKS[reader](path)
