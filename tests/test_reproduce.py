"""reproduce.py on the real AG News sample laid out as a dataset directory: a Markdown table with
the paper's numbers, timing and hardware, honest about the data and the settings it used.
"""
import json
import shutil

import pytest

from conftest import AG_NEWS, assert_clean_failure, run_cli

from fasttext_horovod.data_pipeline.datasets import DATASETS
from fasttext_horovod.data_pipeline.synthetic import write_synthetic_dataset

QUICK = ("--dim", "5", "--bucket", "10000")


def reproduce(tmp_path, data_root, *extra):
    return run_cli("reproduce", "--data-root", data_root, "--datasets", "ag_news", "--out", tmp_path / "table",
                   "--runs-dir", tmp_path / "runs", "--cache-dir", tmp_path / "cache", *QUICK, *extra)


@pytest.mark.slow
def test_table_of_the_ag_news_sample_next_to_the_paper(tmp_path):
    data_root = tmp_path / "data"
    shutil.copytree(AG_NEWS, data_root / "ag_news_csv")
    done = reproduce(tmp_path, data_root)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "table.md").read_text()
    assert table == done.stdout.rstrip("\n") + "\n"
    row = next(line for line in table.splitlines() if line.startswith("| ag_news |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "real sample (full set 120,000 / 7,600), 6,000 / 1,600" and cells[2] == "0.25"
    assert (cells[4], cells[6]) == ("91.5", "92.5")
    assert all(float(cells[i]) > 70 for i in (3, 5)) and all(float(cells[i]) > 0 for i in (7, 8))
    assert "cores" in table and "Settings differ from the paper's** (dim 5, bucket 10000)" in table
    result = json.loads((tmp_path / "table.json").read_text())
    assert result["settings"] == {"dim": 5, "epoch": 5, "bucket": 10000, "seed": 0}
    assert abs(100 * result["rows"][0]["runs"]["bigrams"]["accuracy"] - float(cells[5])) <= 0.05


@pytest.mark.slow
def test_synthetic_data_is_labelled_synthetic(tmp_path):
    data_root = tmp_path / "data_synthetic"
    write_synthetic_dataset(DATASETS["ag_news"], str(data_root), scale=0.005)
    done = reproduce(tmp_path, data_root)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| ag_news |"))
    assert "| SYNTHETIC, 600 / 38 |" in row
    assert "SYNTHETIC rows are generated data" in done.stdout


def test_missing_dataset_says_how_to_fetch_it(tmp_path):
    done = reproduce(tmp_path, tmp_path / "empty")
    assert_clean_failure(done, f"error: {tmp_path / 'empty' / 'ag_news_csv' / 'train.csv'}: no such file",
                         "launch/download.py --dataset ag_news")
