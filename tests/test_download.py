"""The dataset downloader against an HTTP server on 127.0.0.1 serving archives the tests build:
resume after a dropped connection, checksum and integrity failures that leave nothing behind,
archives that try to write outside the data root, an unreachable server.
"""
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli

from fasttext_horovod.data_pipeline.datasets import DATASETS, DatasetSpec
from fasttext_horovod.data_pipeline.download import download_dataset, extract_dataset, fetch
from fasttext_horovod.data_pipeline.errors import InputError

TINY = DatasetSpec("tiny", "tiny_csv", 0.1, 2, train_rows=300, test_rows=40, text_columns=2, paper_accuracy=(0, 0))


def csv_rows(n: int) -> bytes:
    return b"".join(b'"%d","title %d","some body text, number %d."\n' % (i % 2 + 1, i, i) for i in range(n))


def build_archive(spec: DatasetSpec, extra=(), train_rows=None) -> bytes:
    """A `<directory>.tar.gz` like Zhang et al.'s, plus any `extra` (TarInfo, bytes) members."""
    files = {"train.csv": csv_rows(spec.train_rows if train_rows is None else train_rows),
             "test.csv": csv_rows(spec.test_rows), "classes.txt": b"one\ntwo\n" + b"".join(
                 b"c%d\n" % k for k in range(3, spec.num_classes + 1)), "readme.txt": b"test archive\n"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        directory = tarfile.TarInfo(spec.directory)
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{spec.directory}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


class ArchiveServer:
    """Serves `files` (name -> bytes) with HTTP Range support; records each request's Range header.

    `drop_after[name] = n` makes the next response for `name` close the connection after
    n bytes of its body (once).
    """

    def __init__(self):
        self.files, self.drop_after, self.ranges = {}, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = int(requested.split("=")[1].split("-")[0]) if requested else 0
                self.send_response(206 if requested else 200)
                if requested:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = server.drop_after.pop(name, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    serving = ArchiveServer()
    yield serving
    serving.close()


def leftovers(data_root: Path):
    """Anything a failed run might leave: staging directories, part files, the dataset directory."""
    return sorted(p.name for p in data_root.iterdir()) if data_root.exists() else []


def test_canonical_urls_are_fasttexts():
    assert DATASETS["yelp_polarity"].url() == \
        "https://dl.fbaipublicfiles.com/fasttext/data/yelp_review_polarity_csv.tar.gz"
    assert [spec.archive for spec in DATASETS.values()] == [
        "ag_news_csv.tar.gz", "sogou_news_csv.tar.gz", "dbpedia_csv.tar.gz", "yelp_review_polarity_csv.tar.gz",
        "yelp_review_full_csv.tar.gz", "yahoo_answers_csv.tar.gz", "amazon_review_full_csv.tar.gz",
        "amazon_review_polarity_csv.tar.gz"]


def test_dropped_connection_resumes_with_range_and_is_byte_exact(server, tmp_path):
    archive = build_archive(TINY)
    server.files[TINY.archive] = archive
    server.drop_after[TINY.archive] = len(archive) // 2
    seen = []
    report = download_dataset(TINY, str(tmp_path), server.url, on_progress=lambda size, total: seen.append(size))
    assert server.ranges == [None, f"bytes={len(archive) // 2}-"]
    assert (tmp_path / TINY.archive).read_bytes() == archive
    assert report.sha256 == hashlib.sha256(archive).hexdigest()
    assert report.rows["train.csv"] == 300 and report.rows["test.csv"] == 40
    assert (tmp_path / "tiny_csv" / "train.csv").read_bytes() == csv_rows(300)
    assert seen[-1] == len(archive)
    assert leftovers(tmp_path) == ["tiny_csv", TINY.archive]


def test_part_file_of_an_earlier_run_is_resumed(server, tmp_path):
    archive = build_archive(TINY)
    server.files[TINY.archive] = archive
    (tmp_path / (TINY.archive + ".part")).write_bytes(archive[:1000])
    fetch(server.url + TINY.archive, str(tmp_path / TINY.archive))
    assert server.ranges == ["bytes=1000-"]
    assert (tmp_path / TINY.archive).read_bytes() == archive


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    archive = build_archive(TINY)
    corrupted = bytearray(archive)
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.files[TINY.archive] = bytes(corrupted)
    with pytest.raises(InputError, match="sha256 is .* but .* was expected.*deleted it, nothing extracted"):
        download_dataset(TINY, str(tmp_path), server.url, expected_sha256=hashlib.sha256(archive).hexdigest())
    assert leftovers(tmp_path) == []


def test_corrupted_archive_fails_the_gzip_check_and_leaves_nothing(server, tmp_path):
    archive = bytearray(build_archive(TINY))
    archive[len(archive) // 2] ^= 0xFF
    server.files[TINY.archive] = bytes(archive)
    with pytest.raises(InputError, match="damaged archive"):
        download_dataset(TINY, str(tmp_path), server.url)
    assert leftovers(tmp_path) == []


def test_truncated_csv_is_refused_by_its_row_count(server, tmp_path):
    server.files[TINY.archive] = build_archive(TINY, train_rows=299)
    with pytest.raises(InputError, match="train.csv has 299 rows but tiny has 300"):
        download_dataset(TINY, str(tmp_path), server.url)
    assert leftovers(tmp_path) == []


def _member(name, kind=tarfile.REGTYPE, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    info.size = 5 if kind == tarfile.REGTYPE else 0
    return info, b"owned" if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("member, reason", [
    (_member("/tmp/absolute.txt"), "outside the data root"),
    (_member("tiny_csv/../../escaped.txt"), "outside the data root"),
    (_member("tiny_csv/link", tarfile.SYMTYPE, "../../../etc/passwd"), "is a link"),
    (_member("tiny_csv/hard", tarfile.LNKTYPE, "/etc/passwd"), "is a link"),
    (_member("other_dir/file.txt"), "outside tiny_csv/"),
], ids=["absolute", "dotdot", "symlink", "hardlink", "other_directory"])
def test_archive_members_that_escape_are_refused(tmp_path, member, reason):
    data_root = tmp_path / "data"
    data_root.mkdir()
    archive = data_root / TINY.archive
    archive.write_bytes(build_archive(TINY, extra=[member]))
    with pytest.raises(InputError, match=reason):
        extract_dataset(str(archive), TINY, str(data_root))
    assert leftovers(data_root) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_cli_downloads_a_real_spec_dataset_then_leaves_it_alone(server, tmp_path):
    """ag_news's real row counts (120,000 / 7,600) in a small archive; --sha256 pins it."""
    archive = build_archive(DATASETS["ag_news"])
    server.files["ag_news_csv.tar.gz"] = archive
    args = ("--dataset", "ag_news", "--data-root", tmp_path, "--base-url", server.url)
    done = run_cli("download", *args, "--sha256", hashlib.sha256(archive).hexdigest())
    assert done.returncode == 0, done.stderr
    assert "train 120,000 rows, test 7,600 rows" in done.stdout
    assert "sha256 matches --sha256" in done.stdout and "no published digest" in done.stdout
    again = run_cli("download", *args)
    assert again.returncode == 0 and "already in" in again.stdout
    assert len(server.ranges) == 1


def test_cli_unreachable_server_is_one_clear_error(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_cli("download", "--dataset", "ag_news", "--data-root", tmp_path,
                   "--base-url", f"http://127.0.0.1:{port}/")
    assert_clean_failure(done, f"error: http://127.0.0.1:{port}/ag_news_csv.tar.gz: cannot download", "unreachable")
    assert leftovers(tmp_path) == []


def test_cli_unknown_dataset_is_one_clear_error(tmp_path):
    done = run_cli("download", "--dataset", "imdb", "--data-root", tmp_path)
    assert_clean_failure(done, "error: imdb: unknown dataset", "yelp_polarity")


def test_every_file_of_the_dataset_directory_is_unpacked_with_its_rows(tmp_path):
    data_root = tmp_path / "data"
    data_root.mkdir()
    archive = data_root / TINY.archive
    archive.write_bytes(build_archive(TINY))
    rows = extract_dataset(str(archive), TINY, str(data_root))
    assert rows == {"train.csv": 300, "test.csv": 40, "classes.txt": 2, "readme.txt": 1}
    assert sorted(os.listdir(data_root / "tiny_csv")) == ["classes.txt", "readme.txt", "test.csv", "train.csv"]
