"""A piece of a Zhang et al. CSV file normalised all at once, when its lines allow it.

`readers.read_csv_records` parses each line with Python's csv module, joins the fields and
runs `normalize.normalize_csv_record` on it: ~25 us a document. For a line whose fields are
all quoted (`"3","title","body"`, as in every Zhang et al. file) with one class of digits in
the first, the joined fields are the line itself less its quotes (a doubled `""` inside a
field is deleted either way), and none of the script's substitutions crosses a newline, so
the whole piece can be normalised with a few passes of `bytes` methods. Which whitespace
splits tokens and which punctuation stands alone is `distinct_tokens.tokenize_text`'s job;
squeezing spaces changes no token, so it is skipped.

`normalized_csv_piece` returns None for a piece it cannot prove equal (a line of another
shape, a class out of range, a carriage return, a NUL, bytes that are not UTF-8, a field
over the csv module's size limit): the caller reads such a piece record by record, which
also makes today's `error: FILE:LINE: what` messages.
"""
import csv
from typing import Optional

import numba
import numpy as np

from .normalize import LABEL_PREFIX

_QUOTE, _COMMA, _NEWLINE = 34, 44, 10
_MAX_CLASS_DIGITS = 9  # keeps the class number in an int64; longer ones take the record-by-record path


@numba.njit(cache=True)
def _all_simple_csv_lines(data, num_classes, field_limit):
    """Is every line `"N","..."[,"..."...]` with 1 <= N <= num_classes (any N >= 1 if num_classes
    < 0), no field longer than `field_limit` bytes, and no newline or lone quote in a field?"""
    n = len(data)
    i = 0
    while i < n:
        if data[i] != _QUOTE:
            return False
        i += 1
        value = 0
        digits = 0
        while i < n and 48 <= data[i] <= 57:
            value = 10 * value + (data[i] - 48)
            digits += 1
            i += 1
        if digits == 0 or digits > _MAX_CLASS_DIGITS or value < 1 or (num_classes >= 0 and value > num_classes):
            return False
        if i >= n or data[i] != _QUOTE:
            return False
        i += 1
        fields = 0
        while i < n and data[i] == _COMMA:
            if i + 1 >= n or data[i + 1] != _QUOTE:
                return False
            i += 2
            start = i
            while True:
                if i >= n or data[i] == _NEWLINE:
                    return False
                if data[i] == _QUOTE:
                    if i + 1 < n and data[i + 1] == _QUOTE:
                        i += 2
                        continue
                    break
                i += 1
            if i - start > field_limit:
                return False
            i += 1
            fields += 1
        if fields == 0:
            return False
        if i < n:
            if data[i] != _NEWLINE:
                return False
            i += 1
    return True


def normalized_csv_piece(data: bytes, num_classes: Optional[int]) -> Optional[bytes]:
    """The piece's lines as `normalize_csv_record` makes them (spaces not squeezed), or None."""
    if b"\r" in data or b"\x00" in data or not data:
        return None
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not _all_simple_csv_lines(np.frombuffer(data, dtype=np.uint8), -1 if num_classes is None else num_classes,
                                 csv.field_size_limit()):
        return None
    # `s/^/__label__/` on every line; the last line may end without a newline.
    text = LABEL_PREFIX + data.replace(b"\n", b"\n" + LABEL_PREFIX)
    if text.endswith(b"\n" + LABEL_PREFIX):
        text = text[:-len(LABEL_PREFIX)]
    # The script's order: lowercase, (quote spacing), delete quotes, (dot spacing), then `<br />`,
    # which deleting quotes may form (`<b"r />`); the other rules only split tokens.
    return text.lower().replace(b'"', b"").replace(b"<br />", b" ")


# Loaded now, before the workers fork (see `distinct_tokens`).
normalized_csv_piece(b'"1","a"\n', None)
