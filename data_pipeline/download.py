"""Fetch, verify and unpack Zhang et al.'s `*_csv.tar.gz` dataset archives.

What is verified, and against what:

* Integrity, always, and fatal: the gzip stream is read to its end, so its CRC-32 and length
  are checked; the tar is well formed; it holds `train.csv`, `test.csv` and `classes.txt`;
  the CSVs have exactly the rows the dataset is known to have (`DatasetSpec.train_rows`,
  `test_rows`) and `classes.txt` names `num_classes` classes.
* A sha256 you pin (`expected_sha256`, the CLI's `--sha256`): fatal on mismatch.
* Published digests (`DatasetSpec.published_digests`: md5s that torchtext records for Zhang et
  al.'s Google Drive archives): reported as matched or not matched, but not fatal. Nobody
  documents that the dl.fbaipublicfiles.com copies are byte-identical to those, and DBpedia
  already has two published md5s for two differently packed copies; so no authoritative
  digest of the canonical URLs' bytes exists, and the integrity checks above are what guard
  the content.

An archive that fails a check is deleted, so the next run downloads it afresh. Downloads go
to `<archive>.part` and resume with an HTTP Range request after a dropped connection, in the
same call or the next; the archive is renamed into place only when complete. Extraction
writes only regular files and directories whose names stay inside the dataset's directory
(no absolute paths, no `..`, no links, devices or FIFOs) into a staging directory that is
renamed into place after every check passed: a failed run leaves no extracted file behind.
Decompression stops at `_MAX_EXPANSION` times the archive's size (the CSVs compress about
3:1), so a gzip bomb is refused after a bounded amount of work and disk.
"""
import gzip
import hashlib
import http.client
import os
import posixpath
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from .datasets import BASE_URL_ENV, DatasetSpec
from .errors import InputError
from .synthetic import is_synthetic

_CHUNK = 1 << 20
_TIMEOUT_S = 30
_ATTEMPTS = 5
_MAX_EXPANSION = 20
_BROKEN_CONNECTION = (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)

# Called with (bytes of the archive on disk, total bytes or None when the server does not say).
ProgressCallback = Callable[[int, Optional[int]], None]


@dataclass
class DownloadReport:
    directory: str
    sha256: str = ""
    md5: str = ""
    digest_check: str = ""
    rows: Optional[Dict[str, int]] = None
    already_present: bool = False


def _unreachable(url: str, reason) -> InputError:
    return InputError(url, f"cannot download ({reason}): the network or the server is unreachable; "
                           f"fetch the archive elsewhere and put it in --data-root, or point --base-url "
                           f"(or ${BASE_URL_ENV}) at a mirror")


def _content_range_total(header: Optional[str]) -> Optional[int]:
    """`bytes 100-199/200` or `bytes */200` -> 200."""
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _open(url: str, offset: int):
    """(response or None when `offset` is already the whole file, resume?, total bytes or None)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and _content_range_total(err.headers.get("Content-Range")) == offset:
            return None, True, offset
        raise InputError(url, f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _unreachable(url, err.reason) from None
    except _BROKEN_CONNECTION as err:
        raise _unreachable(url, err) from None
    if response.status == 206:
        start = response.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
        if start == str(offset):
            return response, True, _content_range_total(response.headers.get("Content-Range"))
        response.close()
        raise InputError(url, f"server resumed at byte {start}, not at {offset}")
    length = response.headers.get("Content-Length")
    return response, False, int(length) if length and length.isdigit() else None


def fetch(url: str, dest: str, on_progress: Optional[ProgressCallback] = None) -> None:
    """Download `url` to `dest`, resuming a `dest.part` left by a broken earlier attempt."""
    if os.path.isfile(dest):
        return
    part = dest + ".part"
    failure = None
    for attempt in range(_ATTEMPTS):
        time.sleep(attempt)  # back off 0, 1, 2, ... seconds between attempts
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        response, resumed, total = _open(url, offset)
        if response is None:  # the part file already holds every byte
            break
        size = offset if resumed else 0
        try:
            with response, open(part, "ab" if resumed else "wb") as out:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    size += len(block)
                    if on_progress:
                        on_progress(size, total)
        except _BROKEN_CONNECTION as err:
            failure = f"connection broke at byte {size:,}: {err!r}"
            continue
        if total is None or size == total:
            break
        failure = f"connection closed at byte {size:,} of {total:,}"
    else:
        raise InputError(url, f"download kept breaking off ({failure}) after {_ATTEMPTS} attempts; "
                              f"run again to resume from {part}")
    os.replace(part, dest)


def _digests(path: str):
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def _rejected(archive: str, message: str) -> InputError:
    """Delete a bad archive (so a rerun fetches it afresh) and describe why."""
    os.remove(archive)
    return InputError(archive, f"{message}; deleted it, nothing extracted")


def check_digests(archive: str, published: tuple, expected_sha256: Optional[str] = None):
    """(sha256, md5, one line on the published digests); a pinned sha256 must match."""
    sha256, md5 = _digests(archive)
    if expected_sha256 and sha256 != expected_sha256.strip().lower():
        raise _rejected(archive, f"sha256 is {sha256} but {expected_sha256} was expected "
                                 f"(corrupted download, or not the expected file)")
    actual = {"md5": md5, "sha256": sha256}
    matched = [d for d in published if actual[d.algorithm] == d.hexdigest]
    if matched:
        note = f"{matched[0].algorithm} matches the digest published by {matched[0].source}"
    elif published:
        note = (f"md5 {md5} matches none of the published digests ({_describe(published)}); "
                "the download copy may be packed differently, content checked by gzip CRC, members and row counts")
    else:
        note = "no published digest for this archive; content checked by gzip CRC, members and row counts"
    if expected_sha256:
        note = "sha256 matches --sha256; " + note
    return sha256, md5, note


def _describe(published) -> str:
    return "; ".join(f"{d.algorithm} {d.hexdigest} from {d.source}" for d in published)


def _member_path(archive: str, member: tarfile.TarInfo, directory: str) -> str:
    """The member's path relative to the data root, refusing anything that could escape it."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise _rejected(archive, f"unsafe archive: member {name!r} would be written outside the data root")
    if member.issym() or member.islnk():
        raise _rejected(archive, f"unsafe archive: member {name!r} is a link to {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise _rejected(archive, f"unsafe archive: member {name!r} is not a regular file or directory")
    path = posixpath.normpath(name)
    if path != directory and not path.startswith(directory + "/"):
        raise _rejected(archive, f"unexpected archive: member {name!r} is outside {directory}/")
    return path


def _copy_counting_rows(source, path: str) -> int:
    rows, last = 0, b"\n"
    with open(path, "wb") as out:
        for block in iter(lambda: source.read(_CHUNK), b""):
            out.write(block)
            rows += block.count(b"\n")
            last = block[-1:]
    return rows + (last != b"\n")


class _CappedStream:
    """A decompressed stream that fails once more than `limit` bytes came out of it."""

    def __init__(self, stream, limit: int, archive: str):
        self.stream, self.left, self.archive = stream, limit, archive

    def read(self, size: int = -1) -> bytes:
        block = self.stream.read(self.left + 1 if size is None or size < 0 else min(size, self.left + 1))
        self.left -= len(block)
        if self.left < 0:
            raise _rejected(self.archive, f"archive expands beyond {_MAX_EXPANSION}x its size: not a dataset "
                                          "archive (a decompression bomb?)")
        return block


def _unpack(archive: str, directory: str, staging: str) -> Dict[str, int]:
    """Write the archive's files under `staging`; returns each file's row count."""
    rows = {}
    try:
        with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
            stream = _CappedStream(gz, _MAX_EXPANSION * os.path.getsize(archive) + _CHUNK, archive)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    path = _member_path(archive, member, directory)
                    target = os.path.join(staging, *path.split("/"))
                    if member.isdir():
                        os.makedirs(target, exist_ok=True)
                        continue
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with tar.extractfile(member) as source:
                        rows[path[len(directory) + 1:]] = _copy_counting_rows(source, target)
            while stream.read(_CHUNK):  # read to the end: gzip checks its CRC-32 and length there
                pass
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise _rejected(archive, f"damaged archive ({err})") from None
    return rows


def _check_contents(archive: str, spec: DatasetSpec, staging: str, rows: Dict[str, int]) -> None:
    expected = {"train.csv": spec.train_rows, "test.csv": spec.test_rows}
    for name, count in expected.items():
        if name not in rows:
            raise _rejected(archive, f"archive has no {spec.directory}/{name}")
        if rows[name] != count:
            raise _rejected(archive, f"{spec.directory}/{name} has {rows[name]:,} rows but {spec.name} has "
                                     f"{count:,}: truncated, or not this dataset")
    classes = os.path.join(staging, spec.directory, "classes.txt")
    if not os.path.isfile(classes):
        raise _rejected(archive, f"archive has no {spec.directory}/classes.txt")
    with open(classes, "rb") as handle:
        names = [line for line in handle if line.strip()]
    if len(names) != spec.num_classes:
        raise _rejected(archive, f"{spec.directory}/classes.txt names {len(names)} classes, "
                                 f"{spec.name} has {spec.num_classes}")


def extract_dataset(archive: str, spec: DatasetSpec, data_root: str) -> Dict[str, int]:
    """Unpack and check the archive into `data_root/<directory>`, all or nothing."""
    final = spec.dataset_dir(data_root)
    if os.path.exists(final):
        raise InputError(final, "exists but lacks train.csv or test.csv; remove it and run again")
    staging = tempfile.mkdtemp(prefix=f".extracting-{spec.name}-", dir=data_root)
    try:
        rows = _unpack(archive, spec.directory, staging)
        _check_contents(archive, spec, staging, rows)
        os.replace(os.path.join(staging, spec.directory), final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows


def download_dataset(spec: DatasetSpec, data_root: str, base_url: str, expected_sha256: Optional[str] = None,
                     on_progress: Optional[ProgressCallback] = None) -> DownloadReport:
    """Fetch (or resume), verify and unpack one dataset into `data_root/<directory>`."""
    directory = spec.dataset_dir(data_root)
    if is_synthetic(directory):
        raise InputError(directory, "holds a synthetic corpus; download real data into another --data-root")
    if os.path.isfile(spec.train_path(data_root)) and os.path.isfile(spec.test_path(data_root)):
        return DownloadReport(directory, already_present=True)
    os.makedirs(data_root, exist_ok=True)
    archive = os.path.join(data_root, spec.archive)
    fetch(spec.url(base_url), archive, on_progress)
    sha256, md5, note = check_digests(archive, spec.published_digests, expected_sha256)
    rows = extract_dataset(archive, spec, data_root)
    return DownloadReport(directory, sha256, md5, note, rows)

