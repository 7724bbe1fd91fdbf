"""Download the fastText paper's datasets (Zhang et al.'s `*_csv.tar.gz`) into --data-root.

    python launch/download.py --dataset yelp_polarity --data-root data
    python launch/download.py --dataset all --data-root data
    FASTTEXT_DATA_URL=http://mirror/fasttext/data/ python launch/download.py --dataset ag_news

Fetches <base-url>/<name>_csv.tar.gz (default: fastText's own location,
https://dl.fbaipublicfiles.com/fasttext/data/), resuming a broken download, then checks and
unpacks it into <data-root>/<name>_csv/ (see data_pipeline/download.py for exactly what is
verified, and against what). A dataset already unpacked there is left alone.
"""
import argparse
import os

from fasttext_horovod.distributed.logs import results
from fasttext_horovod.launch.common import run_cli


class ByteProgress:
    """Adapts the downloader's (bytes on disk, total) reports to a ProgressReporter."""

    def __init__(self):
        self.reporter = None
        self.resumed_from = self.last = 0

    def __call__(self, size: int, total):
        from fasttext_horovod.distributed.progress import ProgressReporter
        if self.reporter is None:
            self.reporter = ProgressReporter(total, "bytes")
            self.resumed_from = self.last = size
        self.reporter.update(max(size - self.last, 0), self.resumed_from)
        self.last = size

    def close(self):
        if self.reporter:
            self.reporter.close()


def main():
    from fasttext_horovod.data_pipeline.datasets import ARCHIVE_BASE_URL, BASE_URL_ENV, DATASETS, dataset_spec
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}, or all")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--base-url", default=os.environ.get(BASE_URL_ENV, ARCHIVE_BASE_URL),
                        help=f"where the archives are (default: ${BASE_URL_ENV}, else {ARCHIVE_BASE_URL})")
    parser.add_argument("--sha256", help="the archive's expected sha256 (one dataset only): a mismatch is an error")
    args = parser.parse_args()
    specs = list(DATASETS.values()) if args.dataset == "all" else [dataset_spec(args.dataset)]
    if args.sha256 and len(specs) > 1:
        parser.error("--sha256 pins one archive: give one --dataset")
    from fasttext_horovod.data_pipeline.download import download_dataset
    for spec in specs:
        progress = ByteProgress()
        try:
            report = download_dataset(spec, args.data_root, args.base_url, args.sha256, progress)
        finally:
            progress.close()
        if report.already_present:
            results.info(f"{spec.name}: already in {report.directory}")
            continue
        rows = report.rows
        results.info(f"{spec.name}: {report.directory} (train {rows['train.csv']:,} rows, "
                     f"test {rows['test.csv']:,} rows)\n  sha256 {report.sha256}\n  {report.digest_check}")


if __name__ == "__main__":
    run_cli(main)
