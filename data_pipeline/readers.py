"""Readers for the two corpus formats: Zhang et al.'s CSV and fastText's `__label__` lines.

Both yield `Record`s whose tokens are exactly what fastText's `Dictionary::readWord` would
read from the normalised line, so everything downstream sees one representation.
"""
import csv
import io
import os
import re
import sys
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

from .errors import InputError
from .normalize import LABEL_PREFIX, normalize_csv_record, normalize_multilabel_csv_record, normalize_text

EOS = b"</s>"
# fastText's readWord splits on these bytes; bytes.split() covers all but NUL.
_NUL = b"\x00"


@dataclass
class Record:
    """One document as fastText reads it: its tokens in line order, ending in EOS."""

    line: int
    tokens: List[bytes]

    @property
    def labels(self) -> List[bytes]:
        """Label tokens, prefix included, as fastText stores them."""
        return [t for t in self.tokens if t.startswith(LABEL_PREFIX)]

    @property
    def words(self) -> List[bytes]:
        return [t for t in self.tokens if not t.startswith(LABEL_PREFIX)]


def tokenize(line: bytes) -> List[bytes]:
    """Split a normalised line as fastText's `readWord` does, appending the EOS token."""
    tokens = line.replace(_NUL, b" ").split()
    tokens.append(EOS)
    return tokens


def check_readable_file(path) -> None:
    """Fail early, naming the path, for anything that is not a readable regular file."""
    if os.path.isdir(path):
        raise InputError(path, "is a directory, expected a file")
    if not os.path.exists(path):
        raise InputError(path, "no such file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "file is not readable")


def _decode_lines(handle, path, first_line: int = 1) -> Iterator[str]:
    for number, raw in enumerate(handle, start=first_line):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(path, f"not valid UTF-8 (byte {err.start + 1} of the line)", number) from None


def _decoded_lines(path) -> Iterator[str]:
    """Lines of the file as text, rejecting bytes that are not UTF-8 with the line number."""
    with open(path, "rb") as handle:
        yield from _decode_lines(handle, path)


def read_text_lines(path: str, normalise: bool) -> Iterator[bytes]:
    """Unlabelled documents, one per line, from a file or `-` (stdin) for prediction.

    `normalise` applies the training data's normalisation (CSV corpora were normalised
    like fastText's script; fastText-format corpora are taken as already normalised).
    """
    if path == "-":
        lines = _decode_lines(sys.stdin.buffer, "<stdin>")
    else:
        check_readable_file(path)
        lines = _decoded_lines(path)
    for text in lines:
        yield prepare_text(text.rstrip("\n"), normalise)


def prepare_text(text: str, normalise: bool) -> bytes:
    """One raw document as the model reads it: UTF-8, normalised when its corpus was.

    `predict.py` and the server both come through here, so they answer alike.
    """
    data = text.encode("utf-8")
    return normalize_text(data) if normalise else data


_CLASS_SEPARATORS = re.compile(r"[,\s]+")


def _parse_classes(path, line, value: str, num_classes: Optional[int]) -> List[str]:
    """The class indices of a label column: `3`, or several separated by commas or spaces (`1,3`)."""
    classes = [name for name in _CLASS_SEPARATORS.split(value) if name]
    if not classes:
        raise InputError(path, "label column is empty: a row needs at least one class", line)
    for name in classes:
        if not (name.isascii() and name.isdigit()) or int(name) < 1:
            raise InputError(path, f"label column {value!r} is not a class index (1, 2, ...) or a list "
                                   f"of them (\"1,3\")", line)
        if num_classes is not None and int(name) > num_classes:
            raise InputError(path, f"class {name} is outside 1..{num_classes} of classes.txt", line)
    return classes


def read_csv_records(path, num_classes: Optional[int] = None, lines: Optional[Iterator[str]] = None,
                     first_line: int = 1) -> Iterator[Record]:
    """Zhang et al. CSV rows `"class","title"[,"description"...]`, normalised like fastText's script.

    The class column may hold several class indices separated by commas or spaces
    (`"1,3","title","body"`): the row then has one `__label__N` per class
    (`normalize_multilabel_csv_record`). A row with one class is normalised exactly as
    fastText's `classification-results.sh` does, byte for byte.
    """
    reader = csv.reader(_decoded_lines(path) if lines is None else lines, strict=True)
    try:
        for fields in reader:
            line = reader.line_num + first_line - 1
            if not fields or fields == [""]:
                continue
            if len(fields) < 2:
                raise InputError(path, f"expected a class and at least one text column, got {len(fields)} column", line)
            classes = _parse_classes(path, line, fields[0], num_classes)
            text = (normalize_csv_record(fields) if len(classes) == 1
                    else normalize_multilabel_csv_record(classes, fields[1:]))
            yield Record(line, tokenize(text))
    except csv.Error as err:
        raise InputError(path, f"malformed CSV: {err}", reader.line_num + first_line - 1) from None


def read_fasttext_records(path, lines: Optional[Iterator[str]] = None, first_line: int = 1) -> Iterator[Record]:
    """fastText's format: any `__label__X` token is a label, the rest is already-normalised text."""
    for number, text in enumerate(_decoded_lines(path) if lines is None else lines, start=first_line):
        if not text.strip():
            continue
        record = Record(number, tokenize(text.encode("utf-8")))
        if not record.labels:
            raise InputError(path, "line has no __label__ token", number)
        yield record


def detect_format(path) -> str:
    return "csv" if str(path).lower().endswith(".csv") else "fasttext"


def read_records(path, num_classes: Optional[int] = None) -> Iterator[Record]:
    """Records of a labelled corpus file, in file order; the format follows the extension."""
    check_readable_file(path)
    if detect_format(path) == "csv":
        yield from read_csv_records(path, num_classes)
    else:
        yield from read_fasttext_records(path)


def read_records_of_piece(path, data: bytes, first_line: int, num_classes: Optional[int] = None) -> Iterator[Record]:
    """Records of `data`, a piece of the file `path` that starts at line `first_line` and at a
    record boundary (see `file_pieces.record_pieces`): what `read_records` yields for those lines."""
    lines = _decode_lines(io.BytesIO(data), path, first_line)
    if detect_format(path) == "csv":
        return read_csv_records(path, num_classes, lines, first_line)
    return read_fasttext_records(path, lines, first_line)


def read_class_names(corpus_path) -> Optional[Sequence[str]]:
    """Names from a `classes.txt` beside a CSV corpus (line k names class k), if present."""
    path = os.path.join(os.path.dirname(os.path.abspath(corpus_path)), "classes.txt")
    if detect_format(corpus_path) != "csv" or not os.path.isfile(path):
        return None
    check_readable_file(path)
    return [name.strip() for name in _decoded_lines(path) if name.strip()]
