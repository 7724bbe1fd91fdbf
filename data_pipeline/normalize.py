"""Text normalisation identical to fastText's `classification-results.sh`.

The script pipes each raw CSV line through::

    tr '[:upper:]' '[:lower:]' | sed -e 's/^/__label__/g' |
    sed -e "s/'/ ' /g" -e 's/"//g' -e 's/\\./ \\. /g' -e 's/<br \\/>/ /g'
        -e 's/,/ , /g' -e 's/(/ ( /g' -e 's/)/ ) /g' -e 's/\\!/ \\! /g'
        -e 's/\\?/ \\? /g' -e 's/\\;/ /g' -e 's/\\:/ /g' | tr -s " "

We work on bytes, as `tr` and `sed` do: only ASCII letters are lowercased and every
other byte passes through untouched, so the output is byte-equal to the script's.
"""
from typing import Sequence

LABEL_PREFIX = b"__label__"

# Applied in the script's order: later rules see the output of earlier ones.
_SUBSTITUTIONS = (
    (b"'", b" ' "),
    (b'"', b""),
    (b".", b" . "),
    (b"<br />", b" "),
    (b",", b" , "),
    (b"(", b" ( "),
    (b")", b" ) "),
    (b"!", b" ! "),
    (b"?", b" ? "),
    (b";", b" "),
    (b":", b" "),
)


def _squeeze_spaces(text: bytes) -> bytes:
    while b"  " in text:
        text = text.replace(b"  ", b" ")
    return text


def normalize_text(text: bytes) -> bytes:
    """Lowercase ASCII, space out punctuation, drop quotes and colons, squeeze spaces."""
    text = text.lower()
    for old, new in _SUBSTITUTIONS:
        text = text.replace(old, new)
    return _squeeze_spaces(text)


def normalize_csv_record(fields: list) -> bytes:
    """The script's output for one Zhang et al. CSV record, given its parsed fields.

    The script sees the raw line `"3","title","body"`; after it deletes the quotes this is
    the fields joined by commas (a doubled `""` inside a field is deleted either way), and
    `s/^/__label__/` makes the first field the label.
    """
    return LABEL_PREFIX + normalize_text(",".join(fields).encode("utf-8"))


def normalize_multilabel_csv_record(classes: Sequence[str], text_fields: list) -> bytes:
    """A record whose label column holds several classes: `__label__1 __label__3 , title , body`.

    The script has no notion of several classes; this is the line it would write if the label
    column held one, with one `__label__` token per class. For a single class of digits it is
    byte-equal to `normalize_csv_record`, which single-class rows still go through.
    """
    labels = b" ".join(LABEL_PREFIX + name.encode("ascii") for name in classes)
    return labels + normalize_text(("," + ",".join(text_fields)).encode("utf-8"))
