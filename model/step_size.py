"""How big a step may be: the update rule for a global batch, its default learning rate,
and how many documents fastText's summed SGD may take at once. No MXNet, so entry points
can decide before MXNet loads. The rules themselves are in `optimizers`.
"""
import math
from typing import Optional

OPTIMIZERS = ("auto", "sgd", "adagrad", "rowmean")

# lr x global batch sets how far a step moves (summed gradients: see model/optimizers.py). On AG
# News softmax training diverges above this (lr .5 at 64 documents does, at 32 it does
# not; lr 1 at 32 does).
STABLE_LR_TIMES_BATCH = 16.0

# --optimizer auto: fastText's SGD up to this many documents per step (all ranks together),
# row-mean SGD above. Measured by bench/large_batch.py (README, "Large batches").
LARGEST_SGD_GLOBAL_BATCH = 64

# Default --lr per rule: fastText's for SGD; Adagrad's one rate for every batch (Debian at 1,024:
# lr 0.5 / 1 / 2 gave 0.739 / 0.745 / 0.745; AG at 1,024: 0.880 at 0.5 and 1).
DEFAULT_LR = {"sgd": 0.1, "adagrad": 1.0}

# Row-mean SGD's --lr grows as the root of the global batch from ROW_MEAN_LR at ROW_MEAN_BATCH, and
# the output matrix's Adagrad rate stops growing there (`row_mean_output_share`). A row used by one
# document takes fastText's per-example step at this rate, but a row used by many takes one mean
# step per batch where fastText takes one per document, so common rows fall behind as the batch
# grows; the output matrix is every document's and Adagrad-normalised, and more rate only makes its
# first steps unstable. Picked on 10% validation splits of train.csv (seed 0; rows' rate / output's
# rate -> validation accuracy). Debian, 1,024: 2/2 0.797, 4/1 0.793, 4/2 0.798, 4/4 0.802, 8/8
# 0.780; 4,096 (10 epochs): 4/2 0.765, 8/1 0.760, 8/2 0.760, 8/4 0.767, 8/8 0.736, 16/1 0.766,
# 16/16 0.721 (row-wise Adagrad at 1,024, lr 1: 0.770). AG sample, 256: 1/1 0.887, 2/2 0.883;
# 1,024: 1/2 0.897, 2/2 0.890, 4/4 0.860, 8/8 0.852; 4,096: 4/2 0.892. Debian is flat from 2 to 4
# at 1,024 where AG falls by 3 points, so 2. Test accuracy at these defaults: README, "Large batches".
ROW_MEAN_LR = 2.0
ROW_MEAN_BATCH = 1024


def choose_optimizer(name: str, global_batch: int) -> str:
    """The rule a run uses: `name`, or for "auto" the one suited to `global_batch` documents a step."""
    if name != "auto":
        return name
    return "sgd" if global_batch <= LARGEST_SGD_GLOBAL_BATCH else "rowmean"


def default_batch_size(lr: float, world_size: int, largest: int = 64) -> int:
    """Documents per rank per step when none is given: `largest`, or fewer where lr x global
    batch would pass `STABLE_LR_TIMES_BATCH` (the paper's lr .5 datasets get 32 on one rank)."""
    return max(1, min(largest, int(STABLE_LR_TIMES_BATCH / (lr * world_size))))


def row_mean_output_share(global_batch: int) -> float:
    """The output matrix's Adagrad rate as a share of row-mean SGD's rate: 1 up to
    `ROW_MEAN_BATCH` documents a step, then falling as the root of the batch, so that at the
    default rates the output's rate stays `ROW_MEAN_LR` whatever the batch."""
    return min(1.0, math.sqrt(ROW_MEAN_BATCH / global_batch))


def default_lr(optimizer: str, global_batch: int, sgd_lr: Optional[float] = None) -> float:
    """--lr when none is given: for SGD `sgd_lr` (a dataset's) or fastText's 0.1; for the
    large-batch rules their own, row-mean SGD's growing with the global batch."""
    rule = choose_optimizer(optimizer, global_batch)
    if rule == "sgd":
        return sgd_lr or DEFAULT_LR["sgd"]
    if rule == "rowmean":
        return ROW_MEAN_LR * math.sqrt(global_batch / ROW_MEAN_BATCH)
    return DEFAULT_LR[rule]
