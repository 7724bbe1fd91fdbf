"""The compiled preprocessing kernels give exactly what the record-by-record readers give.

A piece of a corpus file is tokenised from its raw bytes when its lines are simple enough
(`piece_text.normalized_csv_piece`), otherwise record by record; either way the tokens of
every line, their hashes and, for a bad line, the error must be the readers'. The corpus's
distinct tokens are merged in a hash table that must keep tokens of equal hash apart, and
pass 2's encoder must give `Dictionary.encode_positions`'s arrays.
"""

import numpy as np
import pytest
from conftest import AG_NEWS
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from fasttext_horovod.data_pipeline.dictionary import Dictionary, hash_token, hash_tokens
from fasttext_horovod.data_pipeline.distinct_tokens import CorpusTokens, tokenize_text
from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.file_pieces import Piece, record_pieces, tokenize_piece
from fasttext_horovod.data_pipeline.line_encoding import encode_positions
from fasttext_horovod.data_pipeline.piece_text import normalized_csv_piece
from fasttext_horovod.data_pipeline.readers import read_records, read_records_of_piece


def lines_of(tokens) -> list:
    """Each line's tokens as bytes, from distinct tokens and positions."""
    distinct, ends = tokens.tokens, np.cumsum(tokens.lengths)
    return [[distinct[p] for p in tokens.positions[end - length:end]] for end, length in zip(ends, tokens.lengths)]


def records_or_error(path: str, data: bytes, num_classes):
    try:
        return [r.tokens for r in read_records_of_piece(path, data, 1, num_classes)]
    except InputError as err:
        return str(err)


def tokenized_or_error(path: str, data: bytes, num_classes):
    try:
        tokens = tokenize_piece(Piece(path, data, 1, num_classes)).tokens
    except InputError as err:
        return str(err)
    np.testing.assert_array_equal(tokens.hashes, hash_tokens(tokens.tokens))
    np.testing.assert_array_equal(tokens.counts, np.bincount(tokens.positions, minlength=len(tokens.hashes)))
    return lines_of(tokens)


def test_the_sample_takes_the_fast_path_and_reads_as_the_csv_reader_does():
    path = str(AG_NEWS / "train.csv")
    pieces = list(record_pieces(path, 50_000, 4))
    assert all(normalized_csv_piece(p.data, 4) is not None for p in pieces)
    tokenized = [line for p in pieces for line in lines_of(tokenize_piece(p).tokens)]
    assert tokenized == [r.tokens for r in read_records(path, 4)]


def test_fasttext_format_reads_as_the_fasttext_reader_does(tmp_path):
    lines = [b" ".join(r.tokens[:-1]) for r in read_records(AG_NEWS / "train.csv", 4)][:2000]
    path = tmp_path / "train.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert tokenized_or_error(str(path), path.read_bytes(), None) == [r.tokens for r in read_records(path)]


# Bytes a hostile field is made of: quotes, doubled quotes, the `<br />` the script removes and
# one a quote hides, every byte fastText splits on, punctuation, non-ASCII and broken UTF-8.
FIELD_PARTS = [b"a", b"Word", b"x", b'"', b'""', b"<br />", b'<b"r />', b"<BR />", b"\r", b"\n", b"\r\n", b"\t",
               b"\x0b", b"\x0c", b"\x00", b" ", b"  ", b"'", b".", b",", b"(", b")", b"!", b"?", b";", b":",
               b"</s>", b"__label__2", "é".encode(), "日本".encode(), b"\xff", b"\xc3", b"1", b"\x1c"]


@st.composite
def csv_lines(draw, well_formed: bool):
    """A CSV piece: `"N","field",...` lines, hostile bytes inside the fields; with `well_formed`
    False, also lines of other shapes (unquoted fields, stray quotes, empty lines, bad classes)."""
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        parts = FIELD_PARTS if not well_formed else [p for p in FIELD_PARTS if p not in
                                                     (b'"', b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xc3")]
        fields = [b"".join(draw(st.lists(st.sampled_from(parts), max_size=6))) for _ in range(draw(st.integers(1, 3)))]
        if well_formed:
            fields = [field.replace(b'"', b'""') for field in fields]
        labels = [b"1", b"2", b"4"] if well_formed else [b"1", b"3", b"0", b"9", b"1,3", b"", b"x"]
        label = draw(st.sampled_from(labels))
        quoted = well_formed or draw(st.booleans())
        line = b",".join((b'"%s"' % f) if quoted else f for f in [label] + fields)
        lines.append(line if well_formed or draw(st.booleans()) else draw(st.sampled_from([b"", b'"1"', line[:-1]])))
    ending = b"\n" if well_formed else draw(st.sampled_from([b"\n", b"", b"\r\n"]))
    return b"\n".join(lines) + ending


@fuzz_settings(300)
@given(data=csv_lines(well_formed=True))
def test_well_formed_csv_pieces_take_the_fast_path_and_read_as_the_csv_reader_does(tmp_path_factory, data):
    path = str(tmp_path_factory.getbasetemp() / "train.csv")
    assert normalized_csv_piece(data, 4) is not None
    assert lines_of(tokenize_text(normalized_csv_piece(data, 4), split_punctuation=True)) == \
        records_or_error(path, data, 4)


@fuzz_settings(400)
@given(data=csv_lines(well_formed=False))
def test_any_csv_piece_reads_as_the_csv_reader_does_or_fails_with_its_error(tmp_path_factory, data):
    path = str(tmp_path_factory.getbasetemp() / "train.csv")
    assert tokenized_or_error(path, data, 4) == records_or_error(path, data, 4)


@fuzz_settings(300)
@given(lines=st.lists(st.lists(st.sampled_from(FIELD_PARTS + [b"__label__1", b"__label__x"]), max_size=8),
                      min_size=1, max_size=6),
       ending=st.sampled_from([b"\n", b""]))
def test_any_fasttext_piece_reads_as_the_fasttext_reader_does_or_fails_with_its_error(tmp_path_factory, lines,
                                                                                     ending):
    path = str(tmp_path_factory.getbasetemp() / "train.txt")
    data = b"\n".join(b" ".join(line) for line in lines) + ending
    assert tokenized_or_error(path, data, None) == records_or_error(path, data, None)


def test_tokens_of_equal_hash_stay_apart():
    # Known 32-bit FNV-1a collisions: the table must compare bytes, not trust the hash.
    pairs = [(b"costarring", b"liquid"), (b"declinate", b"macallums"), (b"altarage", b"zinke")]
    assert all(hash_token(a) == hash_token(b) for a, b in pairs)
    text = b"".join(b"__label__1 %s %s %s\n" % (a, b, a) for a, b in pairs)
    piece = tokenize_text(text, split_punctuation=False)
    assert lines_of(piece) == [line.split() + [b"</s>"] for line in text.splitlines()]
    index = CorpusTokens()
    where = index.add(piece)
    assert index.tokens == piece.tokens and where.tolist() == list(range(len(piece.tokens)))


@fuzz_settings(200)
@given(pieces=st.lists(st.lists(st.lists(st.sampled_from([b"a", b"b", b"ab", b"liquid", b"costarring", b"xyzxyzxyz1",
                                                           b"xyzxyzxyz2", b"__label__1", "é".encode()]),
                                         max_size=6), max_size=5), max_size=6))
def test_merged_pieces_keep_the_files_order_of_first_occurrence_and_counts(pieces):
    index, every_token, spilled = CorpusTokens(), [], []
    for piece in pieces:
        tokens = tokenize_text(b"".join(b" ".join(line) + b"\n" for line in piece), split_punctuation=False)
        spilled.extend(index.add(tokens)[tokens.positions].tolist())
        every_token.extend(token for line in piece for token in line + [b"</s>"])
    distinct = list(dict.fromkeys(every_token))
    assert index.tokens == distinct
    assert [distinct[p] for p in spilled] == every_token
    np.testing.assert_array_equal(index.hashes, hash_tokens(distinct))
    np.testing.assert_array_equal(index.counts, [every_token.count(t) for t in distinct])
    np.testing.assert_array_equal(index.label_mask(), [t.startswith(b"__label__") for t in distinct])


@pytest.mark.parametrize("word_ngrams", [1, 2, 3])
@pytest.mark.parametrize("pruned", [False, True], ids=["full", "pruned"])
def test_the_compiled_encoder_gives_encode_positions_arrays_on_the_sample(word_ngrams, pruned):
    lines = [r.tokens for r in read_records(AG_NEWS / "train.csv", 4)]
    lines[3] = lines[3][:5] + [b"</s>"] + lines[3][5:]  # a literal EOS mid-line ends what getLine reads
    dictionary = Dictionary.build(lines, min_count=2, bucket=5000, word_ngrams=word_ngrams)
    if pruned:
        kept = np.random.default_rng(0).permutation(dictionary.num_input_rows)[:dictionary.num_input_rows // 3]
        dictionary = dictionary.pruned(kept)[0]
    distinct = list(dict.fromkeys(t for line in lines for t in line))
    position_of = {t: i for i, t in enumerate(distinct)}
    positions = np.array([position_of[t] for line in lines for t in line], dtype=np.int32)
    lengths = np.array([len(line) for line in lines], dtype=np.int32)
    table = dictionary.table(distinct)
    expected = dictionary.encode_positions(positions.astype(np.int64), lengths.astype(np.int64), table)
    ours = encode_positions(dictionary, positions, lengths, table)
    for field in ("ids", "offsets", "label_ids", "label_offsets", "num_tokens"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(expected, field), err_msg=field)
