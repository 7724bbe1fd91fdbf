"""The fastText paper's eight datasets: where they live and the learning rate it used.

Learning rates are those of fastText's `classification-results.sh` / the paper's Table 1
runs; directories are those inside Zhang et al.'s `*_csv.tar.gz` archives.
"""
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    directory: str
    lr: float
    num_classes: int

    def train_path(self, data_root: str) -> str:
        return os.path.join(data_root, self.directory, "train.csv")

    def test_path(self, data_root: str) -> str:
        return os.path.join(data_root, self.directory, "test.csv")


DATASETS = {spec.name: spec for spec in (
    DatasetSpec("ag_news", "ag_news_csv", 0.25, 4),
    DatasetSpec("sogou_news", "sogou_news_csv", 0.5, 5),
    DatasetSpec("dbpedia", "dbpedia_csv", 0.5, 14),
    DatasetSpec("yelp_polarity", "yelp_review_polarity_csv", 0.1, 2),
    DatasetSpec("yelp_full", "yelp_review_full_csv", 0.1, 5),
    DatasetSpec("yahoo_answers", "yahoo_answers_csv", 0.1, 10),
    DatasetSpec("amazon_full", "amazon_review_full_csv", 0.05, 5),
    DatasetSpec("amazon_polarity", "amazon_review_polarity_csv", 0.05, 2),
)}
