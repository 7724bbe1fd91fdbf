"""Distinct tokens of normalised text, found with compiled kernels instead of Python dicts.

Preprocessing reads tens of millions of tokens; a dict lookup per token costs more than
everything else together. Here the tokens live as bytes in one growing buffer, each followed
by a newline (no token holds whitespace, so `bytes.split(b"\\n")` turns them back into a
list), and an open-addressing table keyed by fastText's FNV-1a hash finds a token's index;
a hit compares the bytes, so equal hashes of different tokens stay different tokens.

`tokenize_text` splits a piece's normalised lines as fastText's `readWord` does and returns
its distinct tokens with their hashes and every token as a position into them;
`CorpusTokens` merges the pieces' distinct tokens into the corpus's, in order of first
occurrence (which decides how the dictionary's sort breaks ties).
"""
from dataclasses import dataclass
from typing import List

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_FNV_OFFSET = np.uint32(2166136261)
_FNV_PRIME = np.uint32(16777619)
_EOS = np.frombuffer(b"</s>", dtype=np.uint8)
_LABEL_PREFIX = np.frombuffer(b"__label__", dtype=np.uint8)
_EMPTY = np.int64(-1)

# Each byte's part in `_tokenize`: inside a token, between tokens, a token by itself, a line end.
_IN_TOKEN, _SEPARATOR, _ALONE, _LINE_END = 0, 1, 2, 3
_WHITESPACE_KINDS = np.zeros(256, dtype=np.uint8)
_WHITESPACE_KINDS[[0, 9, 11, 12, 13, 32]] = _SEPARATOR  # fastText's readWord splits on these and "\n"
_WHITESPACE_KINDS[10] = _LINE_END
# With `classification-results.sh`'s punctuation rules (see normalize.py): `;` and `:` become
# spaces; `'`, `.`, `,`, `(`, `)`, `!` and `?` become tokens of their own.
_PUNCTUATION_KINDS = _WHITESPACE_KINDS.copy()
_PUNCTUATION_KINDS[[ord(";"), ord(":")]] = _SEPARATOR
_PUNCTUATION_KINDS[[ord(c) for c in "'.,()!?"]] = _ALONE


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU for the cache line of `array.flat[index]` ahead of use (LLVM's prefetch: read, keep).

    A lookup's branches depend on the table's contents, so the CPU cannot run ahead to the
    next lookup's cache miss by itself; asking a few lookups ahead overlaps the misses.
    """
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8")
        builder.call(prefetch, [builder.bitcast(builder.gep(data, [args[1]]), byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(array, index), codegen


_AHEAD = 8  # lookups between a prefetch and its use


@numba.njit(cache=True, inline="always")
def _fnv1a(text, start, end):
    """fastText's `Dictionary::hash`: bytes read as signed chars, so a byte >= 0x80 is sign-extended."""
    h = _FNV_OFFSET
    for i in range(start, end):
        h = np.uint32((h ^ np.uint32(np.int32(np.int8(text[i])))) * _FNV_PRIME)
    return h


@numba.njit(cache=True, inline="always")
def _head(text, start, end):
    """The token's first 8 bytes as one int64 (zero-padded): with its length, the whole of a short token."""
    key = np.uint64(0)
    for k in range(min(end - start, 8)):
        key |= np.uint64(text[start + k]) << np.uint64(8 * k)
    return np.int64(key)


# A slot of the table is two int64: the token's `_head`, and (length << 32) | index (-1: empty).
# One cache line answers for a token of up to 8 bytes; a longer one compares its other bytes.
@numba.njit(cache=True)
def _intern(text, start, end, h, data, starts, hashes, slots, count):
    """Index of `text[start:end]` (hash `h`), appended as number `count` if new; returns (index, count).

    The caller leaves room for one more token in `data`, `starts` and `hashes`, and keeps
    `slots` (a power of two long) at most half full.
    """
    mask = len(slots) - 1
    slot = np.int64(h) & mask
    length = end - start
    head = _head(text, start, end)
    while True:
        entry = slots[slot, 1]
        if entry == _EMPTY:
            break
        if slots[slot, 0] == head and entry >> 32 == length:
            index = entry & 0xFFFFFFFF
            if length <= 8:
                return index, count
            first = starts[index]
            same = True
            for k in range(8, length):
                if data[first + k] != text[start + k]:
                    same = False
                    break
            if same:
                return index, count
        slot = (slot + 1) & mask
    first = starts[count]
    for k in range(length):
        data[first + k] = text[start + k]
    data[first + length] = 10  # "\n"
    starts[count + 1] = first + length + 1
    hashes[count] = np.int32(h)
    slots[slot, 0] = head
    slots[slot, 1] = (length << 32) | count
    return count, count + 1


@numba.njit(cache=True)
def _grown(slots, hashes):
    """The table with twice the slots, the same entries."""
    grown = np.full((2 * len(slots), 2), _EMPTY, dtype=np.int64)
    _rehash(slots, hashes, grown)
    return grown


@numba.njit(cache=True)
def _rehash(slots, hashes, grown):
    """Enter the entries of `slots` into the empty table `grown`."""
    mask = len(grown) - 1
    for old in range(len(slots)):
        if slots[old, 1] != _EMPTY:
            slot = np.int64(np.uint32(hashes[slots[old, 1] & 0xFFFFFFFF])) & mask
            while grown[slot, 1] != _EMPTY:
                slot = (slot + 1) & mask
            grown[slot, 0] = slots[old, 0]
            grown[slot, 1] = slots[old, 1]


def _empty_table(slots: int) -> np.ndarray:
    return np.full((slots, 2), _EMPTY, dtype=np.int64)


@numba.njit(cache=True)
def _tokenize(text, kinds, eos, label_prefix, data, starts, hashes, slots):
    """Split `text` into lines of tokens; see `tokenize_text`.

    First every token's bytes and hash (a scan), then their indices (lookups, each slot
    prefetched a few tokens ahead), then their counts.
    """
    n = len(text)
    token_starts = np.empty(n + 1, dtype=np.int32)  # a token ends at each byte, at most, or at the end
    token_ends = np.empty(n + 1, dtype=np.int32)    # -1: the line's EOS
    token_hashes = np.empty(n + 1, dtype=np.uint32)
    lengths = np.empty(n + 1, dtype=np.int32)
    prefix = len(label_prefix)
    num_tokens = 0
    num_lines = 0
    line_start = 0     # first token of the current line
    line_begins = 0    # first byte of the current line
    labelled = True    # every line so far has a `__label__` token
    line_labelled = False
    i = 0
    while i <= n:
        kind = kinds[text[i]] if i < n else (_LINE_END if i > line_begins else _SEPARATOR)
        if kind == _IN_TOKEN:
            start = i
            h = _FNV_OFFSET
            while i < n and kinds[text[i]] == _IN_TOKEN:
                h = np.uint32((h ^ np.uint32(np.int32(np.int8(text[i])))) * _FNV_PRIME)
                i += 1
            token_starts[num_tokens], token_ends[num_tokens], token_hashes[num_tokens] = start, i, h
            num_tokens += 1
            if not line_labelled and i - start >= prefix:
                line_labelled = True
                for k in range(prefix):
                    if text[start + k] != label_prefix[k]:
                        line_labelled = False
                        break
        elif kind == _ALONE:
            h = _fnv1a(text, i, i + 1)
            token_starts[num_tokens], token_ends[num_tokens], token_hashes[num_tokens] = i, i + 1, h
            num_tokens += 1
            i += 1
        elif kind == _LINE_END:  # its EOS (a last line without "\n" too)
            token_ends[num_tokens] = -1
            num_tokens += 1
            lengths[num_lines] = num_tokens - line_start
            num_lines += 1
            line_start = num_tokens
            labelled = labelled and line_labelled
            line_labelled = False
            i += 1
            line_begins = i
        else:
            i += 1
    eos_hash = _fnv1a(eos, 0, len(eos))
    positions = np.empty(num_tokens, dtype=np.int32)
    count = 0
    for k in range(num_tokens):
        if 2 * (count + 2) > len(slots):
            slots = _grown(slots, hashes)
        if k + _AHEAD < num_tokens:
            ahead = eos_hash if token_ends[k + _AHEAD] < 0 else token_hashes[k + _AHEAD]
            _prefetch(slots, 2 * (np.int64(ahead) & (len(slots) - 1)))
        if token_ends[k] < 0:
            positions[k], count = _intern(eos, 0, len(eos), eos_hash, data, starts, hashes, slots, count)
        else:
            positions[k], count = _intern(text, token_starts[k], token_ends[k], token_hashes[k], data, starts, hashes,
                                          slots, count)
    counts = np.zeros(count, dtype=np.int64)
    for k in range(num_tokens):
        counts[positions[k]] += 1
    return positions, lengths[:num_lines].copy(), counts, labelled


@dataclass
class TextTokens:
    """Lines of text as positions into their distinct tokens."""

    token_data: np.ndarray  # uint8: the distinct tokens in order of first occurrence, each followed by "\n"
    token_starts: np.ndarray  # int64, len(tokens) + 1 offsets into token_data
    hashes: np.ndarray      # int32 fastText hash of each distinct token
    counts: np.ndarray      # int64 occurrences of each distinct token
    positions: np.ndarray   # int32, every token of every line (each line ending in EOS)
    lengths: np.ndarray     # int32 tokens per line
    all_labelled: bool      # every line has a `__label__` token

    @property
    def tokens(self) -> List[bytes]:
        return _split_tokens(self.token_data, self.token_starts)


def _split_tokens(data: np.ndarray, starts: np.ndarray) -> List[bytes]:
    return data[:starts[-1] - 1].tobytes().split(b"\n") if len(starts) > 1 else []


def tokenize_text(text: bytes, split_punctuation: bool) -> TextTokens:
    """Tokens of each line of `text` as fastText's `readWord` reads them, each line ending in EOS.

    Lines end at "\\n" (a last line without one counts if it is not empty); tokens are split
    at fastText's whitespace and, with `split_punctuation`, by the punctuation rules of
    `classification-results.sh` (a `normalize_text` line splits the same). Bytes of `text`
    must already be lowercased, quotes deleted and `<br />` replaced, where the script does so.
    """
    array = np.frombuffer(text, dtype=np.uint8)
    most = len(text) + 1  # distinct tokens a text can hold: one a byte, and EOS
    data = np.empty(2 * most + len(_EOS), dtype=np.uint8)  # each token's bytes and a "\n"
    starts = np.empty(most + 1, dtype=np.int64)
    starts[0] = 0
    hashes = np.empty(most, dtype=np.int32)
    slots = _empty_table(1 << 14)  # doubled as it fills
    kinds = _PUNCTUATION_KINDS if split_punctuation else _WHITESPACE_KINDS
    positions, lengths, counts, labelled = _tokenize(array, kinds, _EOS, _LABEL_PREFIX, data, starts, hashes, slots)
    count = len(counts)
    return TextTokens(data[:starts[count]].copy(), starts[:count + 1].copy(), hashes[:count].copy(), counts,
                      positions, lengths, bool(labelled))


@numba.njit(cache=True)
def _merge(piece_data, piece_starts, piece_hashes, piece_counts, where, data, starts, hashes, counts, slots, count):
    mask = len(slots) - 1
    for j in range(len(piece_hashes)):
        if j + _AHEAD < len(piece_hashes):
            _prefetch(slots, 2 * (np.int64(np.uint32(piece_hashes[j + _AHEAD])) & mask))
        where[j], count = _intern(piece_data, piece_starts[j], piece_starts[j + 1] - 1, np.uint32(piece_hashes[j]),
                                  data, starts, hashes, slots, count)
    for j in range(len(piece_hashes)):  # no branches: the CPU overlaps these misses itself
        counts[where[j]] += piece_counts[j]
    return count


class CorpusTokens:
    """The distinct tokens of a corpus in order of first occurrence, with their hashes and counts."""

    def __init__(self):
        self.count = 0
        self._counts = np.zeros(1 << 12, dtype=np.int64)
        self._data = np.empty(1 << 16, dtype=np.uint8)
        self._starts = np.zeros(1 << 12, dtype=np.int64)
        self._hashes = np.empty(1 << 12, dtype=np.int32)
        self._slots = _empty_table(1 << 14)

    def add(self, piece: TextTokens) -> np.ndarray:
        """Corpus indices (int32) of a piece's distinct tokens; tokens not seen before are appended
        in the piece's order, so adding consecutive pieces keeps the file's order of first occurrence."""
        self._make_room(len(piece.hashes), len(piece.token_data))
        where = np.empty(len(piece.hashes), dtype=np.int32)
        self.count = _merge(piece.token_data, piece.token_starts, piece.hashes, piece.counts, where,
                            self._data, self._starts, self._hashes, self._counts, self._slots, self.count)
        return where

    def _make_room(self, tokens: int, num_bytes: int):
        needed = self.count + tokens
        if needed + 1 > len(self._starts):
            size = max(2 * len(self._starts), needed + 1)
            self._starts = np.resize(self._starts, size)
            self._hashes = np.resize(self._hashes, size)
            self._counts = np.concatenate([self._counts, np.zeros(size - len(self._counts), dtype=np.int64)])
        if self._starts[self.count] + num_bytes > len(self._data):
            self._data = np.resize(self._data, max(2 * len(self._data), int(self._starts[self.count]) + num_bytes))
        while 2 * needed > len(self._slots):  # keep it at most half full
            # Allocated by numpy, which asks for huge pages: a lookup in a table of tens of MB then
            # costs one cache miss, not a miss and a page walk.
            grown = _empty_table(2 * len(self._slots))
            _rehash(self._slots, self._hashes, grown)
            self._slots = grown

    @property
    def hashes(self) -> np.ndarray:
        return self._hashes[:self.count]

    @property
    def counts(self) -> np.ndarray:
        """Occurrences of each token in the pieces added."""
        return self._counts[:self.count]

    def label_mask(self) -> np.ndarray:
        """Which tokens start with `__label__`."""
        return _starting_with(self._data, self._starts[:self.count + 1], _LABEL_PREFIX)

    @property
    def tokens(self) -> List[bytes]:
        return _split_tokens(self._data, self._starts[:self.count + 1])


@numba.njit(cache=True)
def _starting_with(data, starts, prefix):
    mask = np.zeros(len(starts) - 1, dtype=np.bool_)
    for index in range(len(mask)):
        first = starts[index]
        if starts[index + 1] - 1 - first >= len(prefix):
            mask[index] = True
            for k in range(len(prefix)):
                if data[first + k] != prefix[k]:
                    mask[index] = False
                    break
    return mask


# Load the kernels now, in the process that imports this module (preprocessing's parent, see
# `shards._spill_tokens`): workers forked later inherit them, instead of each loading them
# from numba's cache on its first piece.
tokenize_text(b"__label__1 a.\n", split_punctuation=True)
