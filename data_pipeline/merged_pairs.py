"""A multi-label corpus made of real single-label text: pairs of documents merged into one.

Two AG News articles of different classes written as one row, labelled with both classes,
is a document whose label set really is {class a, class b}: the text of each half supports
its own label. A share of documents stays single, so label sets have one or two members.
The output is Zhang et al.'s CSV with a multi-class label column and the same text columns,
each holding both documents' texts (`"1,3","title a title b","body a body b"`, see
`readers.read_csv_records`), with `classes.txt` beside it. Keeping the column count matters:
every column adds a `,` token after normalisation, and extra columns would tell a model how
many labels a document has.
"""
import csv
import os
import shutil
from typing import List, Sequence

import numpy as np

from .readers import check_readable_file


def pair_documents(classes: Sequence[str], seed: int, single_fraction: float) -> List[List[int]]:
    """Groups of row indices: pairs of different classes, or singles.

    Rows are visited in a seeded random order; a row stays single with probability
    `single_fraction`, otherwise it joins the earliest waiting row of another class, or waits.
    Rows still waiting at the end (only one class left) stay single. Every row is used once.
    """
    rng = np.random.default_rng(seed)
    groups, waiting = [], []
    for row in rng.permutation(len(classes)).tolist():
        if rng.random() < single_fraction:
            groups.append([row])
            continue
        partner = next((w for w in waiting if classes[w] != classes[row]), None)
        if partner is None:
            waiting.append(row)
        else:
            waiting.remove(partner)
            groups.append([partner, row])
    return groups + [[row] for row in waiting]


def merged_row(rows: Sequence[Sequence[str]]) -> List[str]:
    """One CSV row from a group: the classes in increasing order, comma-separated, then each text
    column of the documents joined by a space."""
    classes = sorted({int(row[0]) for row in rows})
    return [",".join(map(str, classes))] + [" ".join(column) for column in zip(*(row[1:] for row in rows))]


def write_merged_pairs(source_csv: str, out_csv: str, seed: int = 0, single_fraction: float = 0.2) -> int:
    """Write the merged-pairs version of a single-label Zhang et al. CSV; returns its row count.

    `classes.txt` beside the source, if present, is copied beside the output.
    """
    check_readable_file(source_csv)
    with open(source_csv, encoding="utf-8", newline="") as handle:
        rows = [fields for fields in csv.reader(handle) if fields]
    groups = pair_documents([row[0] for row in rows], seed, single_fraction)
    os.makedirs(os.path.dirname(os.path.abspath(out_csv)), exist_ok=True)
    with open(out_csv, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for group in groups:
            writer.writerow(merged_row([rows[i] for i in group]))
    classes_txt = os.path.join(os.path.dirname(os.path.abspath(source_csv)), "classes.txt")
    if os.path.isfile(classes_txt):
        shutil.copy(classes_txt, os.path.join(os.path.dirname(os.path.abspath(out_csv)), "classes.txt"))
    return len(groups)
