"""Our normalisation is byte-equal to fastText's `classification-results.sh`.

The reference is the script's own shell pipeline, run with `tr` and `sed` under LC_ALL=C,
so these tests compare against the real tools, not a re-implementation of them.
"""
import csv
import io
import os
import subprocess

import pytest

from conftest import AG_NEWS
from fasttext_horovod.data_pipeline.normalize import normalize_csv_record, normalize_text
from fasttext_horovod.data_pipeline.readers import read_csv_records, tokenize


# `normalize_text` of fastText's classification-results.sh, verbatim.
SCRIPT = (
    r"""tr '[:upper:]' '[:lower:]' | sed -e 's/^/__label__/g' | """
    r"""sed -e "s/'/ ' /g" -e 's/"//g' -e 's/\./ \. /g' -e 's/<br \/>/ /g' -e 's/,/ , /g' """
    r"""-e 's/(/ ( /g' -e 's/)/ ) /g' -e 's/\!/ \! /g' -e 's/\?/ \? /g' -e 's/\;/ /g' -e 's/\:/ /g' """
    r"""| tr -s " " """
)


def run_script(stdin) -> list:
    """Output lines (bytes, newline removed) of the shell pipeline fed `stdin` (bytes or a file)."""
    kwargs = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
    out = subprocess.run(["bash", "-c", SCRIPT], stdout=subprocess.PIPE, check=True,
                         env={**os.environ, "LC_ALL": "C"}, **kwargs).stdout
    lines = out.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def csv_line(fields) -> bytes:
    """One record written the way Zhang et al.'s files are: every field quoted, `"` doubled."""
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(fields)
    return buffer.getvalue().encode("utf-8")


@pytest.mark.parametrize("split", ["train.csv", "test.csv"])
def test_every_real_record_normalises_byte_equal_to_the_shell_script(split):
    """Each record of ag_news_mini normalises to exactly the script's line for it."""
    path = AG_NEWS / split
    with open(path, "rb") as handle:
        expected = run_script(handle)
    with open(path, encoding="utf-8", newline="") as handle:
        records = list(csv.reader(handle))
    assert len(records) == len(expected) > 1000
    mismatches = [i for i, (fields, line) in enumerate(zip(records, expected))
                  if normalize_csv_record(fields) != line]
    assert mismatches == [], f"first mismatch on record {mismatches[:1]}"


@pytest.mark.parametrize("split", ["train.csv", "test.csv"])
def test_reader_tokens_are_what_fasttext_reads_from_the_script_output(split):
    """read_csv_records yields the whitespace tokens of the script's line, then EOS."""
    path = AG_NEWS / split
    with open(path, "rb") as handle:
        expected = run_script(handle)
    records = list(read_csv_records(path, num_classes=4))
    assert [r.tokens for r in records] == [tokenize(line) for line in expected]
    assert [r.line for r in records] == list(range(1, len(expected) + 1))
    assert all(r.tokens[-1] == b"</s>" and len(r.labels) == 1 for r in records)


@pytest.mark.parametrize("fields, expected", [
    (["1", "Line one<br />line two"], b"__label__1 , line one line two"),
    (["1", "Shouted<BR />Line"], b"__label__1 , shouted line"),  # tr lowercases before sed matches
    (["2", 'He said ""hi"" twice'], b"__label__2 , he said hi twice"),
    (["2", 'He said "hi"'], b"__label__2 , he said hi"),
    (["3", "Café ÉCOLE Über"], b"__label__3 , caf\xc3\xa9 \xc3\x89cole \xc3\x9cber"),
    (["4", "a  b   c", "  lead and trail  "], b"__label__4 , a b c , lead and trail "),
    (["4", "Wait... what?!"], b"__label__4 , wait . . . what ? ! "),
    (["1", "it's (so) good; really: yes"], b"__label__1 , it ' s ( so ) good really yes"),
    (["1", "tab\t\tkept"], b"__label__1 , tab\t\tkept"),
])
def test_small_cases_match_the_script_and_the_expected_bytes(fields, expected):
    """Hand-written edge cases give the bytes we expect and the bytes the script gives."""
    ours = normalize_csv_record(fields)
    assert ours == expected
    assert run_script(csv_line(fields)) == [ours]


def test_non_ascii_bytes_pass_through_and_only_ascii_is_lowercased():
    """Multi-byte UTF-8 letters keep their bytes, uppercase ones included, as tr under LC_ALL=C does."""
    assert normalize_text("CAFÉ Café".encode("utf-8")) == b"caf\xc3\x89 caf\xc3\xa9"
    assert normalize_text(b"\xff\x80ABC\xc0") == b"\xff\x80abc\xc0"
    assert run_script(b"\xff\x80ABC\xc0\n") == [b"__label__\xff\x80abc\xc0"]


def test_squeezing_collapses_every_run_of_spaces_to_one():
    """Runs of any length become one space, including runs created by the substitutions."""
    assert normalize_text(b"a" + b" " * 17 + b"b") == b"a b"
    assert normalize_text(b"x , , ;;: y") == b"x , , y"
    assert normalize_text(b"  ") == b" "
