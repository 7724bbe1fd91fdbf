"""What the fuzz tests share: seeded hypothesis settings, mutations of a valid file, a memory
cap, and the rule every case must satisfy.

Every case starts from a real, valid file (made from samples/ag_news_mini) and changes it:
bytes overwritten, inserted or cut, and the file's own header fields (found by parsing the
valid file) set to values a careless reader trips on (0, -1, 2^31 - 1, huge). A reader must
then return a valid result or raise the project's error type with one line that names the
file: no other exception, no signal, and no allocation past the cap (`memory_cap`).

Hypothesis runs derandomized (seeded from each test's source), so CI sees the same cases
every run. A failure it finds is shrunk; keep the shrunk input as a file under
`tests/fuzz_regressions/<reader>/`, where `test_fuzz_regressions.py` replays it for ever.
"""
import contextlib
import os
import re
import resource
import struct
from pathlib import Path
from typing import Callable, Sequence, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"
MEMORY_HEADROOM = 512 << 20   # address space a reader may add while reading one small file

INTERESTING = (0, 1, -1, 2, 7, 255, 256, 65535, 2 ** 31 - 1, -2 ** 31, 2 ** 32, 10 ** 9, 10 ** 12, 2 ** 62,
               2 ** 63 - 1, -2 ** 63)

# A field: (byte offset, struct format of one value, e.g. "<i").
Field = Tuple[int, str]


def fuzz_settings(max_examples: int) -> settings:
    """Seeded, no example database (the regression files are the memory), no time limits per case."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def _fit(value: int, fmt: str) -> bytes:
    """`value` packed as `fmt`, wrapped into the field's range."""
    bits = struct.calcsize(fmt) * 8
    value %= 1 << bits
    if fmt[-1].islower() and value >= 1 << (bits - 1):
        value -= 1 << bits
    return struct.pack(fmt, value)


@st.composite
def mutated(draw, valid: bytes, fields: Sequence[Field] = ()) -> bytes:
    """`valid` with one to four mutations: header fields set to interesting values, bytes
    overwritten, a run of bytes inserted or deleted, or the file cut short."""
    data = bytearray(valid)
    kinds = ["byte", "insert", "delete", "truncate"] + ["field"] * 3 * bool(fields)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(kinds))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "field":
            offset, fmt = draw(st.sampled_from(list(fields)))
            value = draw(st.sampled_from(INTERESTING) | st.integers(-2 ** 63, 2 ** 63 - 1))
            data[offset:offset + struct.calcsize(fmt)] = _fit(value, fmt)
        elif kind == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def struct_fields(offset: int, fmt: str) -> Sequence[Field]:
    """Each value of a struct format (`<12id`) read at `offset`, as its own field."""
    order, fields, position = fmt[0], [], offset
    for repeat, code in re.findall(r"(\d*)(\D)", fmt[1:]):
        for _ in range(int(repeat or 1)):
            fields.append((position, order + code))
            position += struct.calcsize(order + code)
    return fields


@contextlib.contextmanager
def memory_cap(headroom: int = MEMORY_HEADROOM):
    """Limit this process's address space to what it uses now plus `headroom` for the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm", encoding="ascii") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def written(directory: Path, name: str, data: bytes) -> Path:
    """`data` as the file `directory/name`, the case a reader is handed."""
    path = directory / name
    path.write_bytes(data)
    return path


def valid_or_refused(read: Callable, path, errors: tuple):
    """`read()`'s result, or None when it refused the file with one of `errors`, whose message
    must be one line naming `path`. Anything else (another exception, MemoryError past the
    cap) fails the case."""
    try:
        with memory_cap():
            return read()
    except errors as err:
        message = str(err)
        assert message.startswith(str(path)), message
        assert "\n" not in message, message
        return None
