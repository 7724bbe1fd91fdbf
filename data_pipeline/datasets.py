"""The fastText paper's eight datasets: where they live, their sizes, and what the paper got.

Learning rates are those of fastText's `classification-results.sh` / the paper's Table 1
runs; directories are those inside Zhang et al.'s `*_csv.tar.gz` archives. Row counts and
published archive digests are those torchtext records for Zhang et al.'s archives.
"""
import os
from dataclasses import dataclass
from typing import Tuple

from .errors import InputError

# Where fastText's current scripts fetch Zhang et al.'s archives: <base><directory>.tar.gz.
# (Older revisions of classification-results.sh used Google Drive ids for the same archives.)
ARCHIVE_BASE_URL = "https://dl.fbaipublicfiles.com/fasttext/data/"
BASE_URL_ENV = "FASTTEXT_DATA_URL"
_TORCHTEXT = "torchtext (pytorch/text torchtext/datasets/*.py) for Zhang et al.'s Google Drive archive"
_FASTTEXT_DBPEDIA = "fastText tests/fetch_test_data.sh for the copy in le-scientifique/torchDatasets"


@dataclass(frozen=True)
class PublishedDigest:
    """A digest someone published for an archive of this name, and who published it."""

    algorithm: str
    hexdigest: str
    source: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    directory: str
    lr: float
    num_classes: int
    train_rows: int
    test_rows: int
    text_columns: int                       # CSV columns after the class: title, body, ...
    paper_accuracy: Tuple[float, float]     # Table 1, fastText h=10: (unigrams, bigrams), percent
    published_digests: Tuple[PublishedDigest, ...] = ()

    @property
    def archive(self) -> str:
        return self.directory + ".tar.gz"

    def url(self, base_url: str = ARCHIVE_BASE_URL) -> str:
        return base_url.rstrip("/") + "/" + self.archive

    def dataset_dir(self, data_root: str) -> str:
        return os.path.join(data_root, self.directory)

    def train_path(self, data_root: str) -> str:
        return os.path.join(data_root, self.directory, "train.csv")

    def test_path(self, data_root: str) -> str:
        return os.path.join(data_root, self.directory, "test.csv")


def _md5(hexdigest: str, source: str = _TORCHTEXT) -> PublishedDigest:
    return PublishedDigest("md5", hexdigest, source)


DATASETS = {spec.name: spec for spec in (
    # torchtext fetches AG News as two loose CSVs, so no digest of its archive is published.
    DatasetSpec("ag_news", "ag_news_csv", 0.25, 4, 120_000, 7_600, 2, (91.5, 92.5)),
    DatasetSpec("sogou_news", "sogou_news_csv", 0.5, 5, 450_000, 60_000, 2, (93.9, 96.8),
                (_md5("0c1700ba70b73f964dd8de569d3fd03e"),)),
    DatasetSpec("dbpedia", "dbpedia_csv", 0.5, 14, 560_000, 70_000, 2, (98.1, 98.6),
                (_md5("dca7b1ae12b1091090db52aa7ec5ca64"),
                 _md5("8139d58cf075c7f70d085358e73af9b3", _FASTTEXT_DBPEDIA))),
    DatasetSpec("yelp_polarity", "yelp_review_polarity_csv", 0.1, 2, 560_000, 38_000, 1, (93.8, 95.7),
                (_md5("620c8ae4bd5a150b730f1ba9a7c6a4d3"),)),
    DatasetSpec("yelp_full", "yelp_review_full_csv", 0.1, 5, 650_000, 50_000, 1, (60.4, 63.9),
                (_md5("f7ddfafed1033f68ec72b9267863af6c"),)),
    DatasetSpec("yahoo_answers", "yahoo_answers_csv", 0.1, 10, 1_400_000, 60_000, 3, (72.0, 72.3),
                (_md5("f3f9899b997a42beb24157e62e3eea8d"),)),
    DatasetSpec("amazon_full", "amazon_review_full_csv", 0.05, 5, 3_000_000, 650_000, 2, (55.8, 60.2),
                (_md5("57d28bd5d930e772930baddf36641c7c"),)),
    DatasetSpec("amazon_polarity", "amazon_review_polarity_csv", 0.05, 2, 3_600_000, 400_000, 2, (91.2, 94.6),
                (_md5("fe39f8b653cada45afd5792e0f0e8f9b"),)),
)}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a paper dataset; an unknown name is an InputError listing the known ones."""
    if name not in DATASETS:
        raise InputError(name, f"unknown dataset; known: {', '.join(DATASETS)}")
    return DATASETS[name]
