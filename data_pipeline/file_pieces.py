"""A corpus file as consecutive pieces of whole records, and one piece tokenised.

Pieces let preprocessing read a file of any size with bounded memory and tokenise the
pieces on every core (see `shards.preprocess`). A piece ends at a record end: the last
newline of the block for fastText's format; for CSV, the last newline after an even number
of `"` since the piece began, i.e. outside any quoted field (a quoted field may hold
newlines). A `"` inside an unquoted field, which Python's csv takes literally, would make
that count odd: the piece then grows until the count is even again, which keeps the
records whole (a file with such a quote and, later, a quoted newline could be cut inside
the quoted field; Zhang et al.'s files quote every field).
"""
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

from .distinct_tokens import TextTokens, tokenize_text
from .piece_text import normalized_csv_piece
from .readers import detect_format, read_records_of_piece


@dataclass
class Piece:
    path: str
    data: bytes
    first_line: int    # file line number of the piece's first line
    num_classes: Optional[int]


def record_pieces(path: str, piece_bytes: int, num_classes: Optional[int] = None) -> Iterator[Piece]:
    """Consecutive pieces of about `piece_bytes` (more if a record is longer) covering the file."""
    quoted = detect_format(path) == "csv"
    first_line, rest = 1, b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(piece_bytes)
            data = rest + block
            if not block:
                if data:
                    yield Piece(path, data, first_line, num_classes)
                return
            end = _last_record_end(data, quoted)
            if end < 0:  # no record ends in this block: read on
                rest = data
                continue
            piece, rest = data[:end + 1], data[end + 1:]
            yield Piece(path, piece, first_line, num_classes)
            first_line += piece.count(b"\n")


def _last_record_end(data: bytes, quoted: bool) -> int:
    """Offset of the last newline of `data` that ends a record; -1 if none does."""
    end = data.rfind(b"\n")
    if not quoted:
        return end
    quotes = data.count(b'"', 0, end)
    while end >= 0 and quotes % 2:
        before = data.rfind(b"\n", 0, end)
        quotes -= data.count(b'"', before + 1, end)
        end = before
    return end


@dataclass
class TokenizedPiece:
    """A piece's records as positions into its own distinct tokens (see `distinct_tokens.CorpusTokens`)."""

    tokens: TextTokens
    num_bytes: int  # of the piece's text, for the progress bar


def tokenize_piece(piece: Piece) -> TokenizedPiece:
    """What `readers.read_records` makes of the piece's lines, as distinct tokens and positions;
    runs in a worker process.

    A piece of simple lines (see `piece_text.normalized_csv_piece`; for fastText's format,
    UTF-8 lines that each hold a label) is tokenised straight from its bytes; any other is
    read record by record, which also raises the `InputError` of a bad line.
    """
    csv_format = detect_format(piece.path) == "csv"
    text = normalized_csv_piece(piece.data, piece.num_classes) if csv_format else _valid_utf8(piece.data)
    if text is not None:
        tokens = tokenize_text(text, split_punctuation=csv_format)
        if tokens.all_labelled:
            return TokenizedPiece(tokens, len(piece.data))
    records = read_records_of_piece(piece.path, piece.data, piece.first_line, piece.num_classes)
    return TokenizedPiece(tokenize_text(b"".join(b" ".join(record.tokens[:-1]) + b"\n" for record in records),
                                        split_punctuation=False), len(piece.data))


def _valid_utf8(data: bytes) -> Optional[bytes]:
    if data.isascii():
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return data


def piece_lines(piece: Piece) -> Tuple[int, int]:
    """First and last file line of a piece, for messages."""
    return piece.first_line, piece.first_line + max(piece.data.count(b"\n") - 1, 0)
