"""How big a step may be: the update rule for a global batch, its default learning rate,
and how many documents fastText's summed SGD may take at once. No MXNet, so entry points
can decide before MXNet loads. The rules themselves are in `optimizers`.
"""
from typing import Optional

OPTIMIZERS = ("auto", "sgd", "adagrad", "rowmean")

# lr x global batch sets how far a step moves (summed gradients: see model/optimizers.py). On AG
# News softmax training diverges above this (lr .5 at 64 documents does, at 32 it does
# not; lr 1 at 32 does).
STABLE_LR_TIMES_BATCH = 16.0

# --optimizer auto: fastText's SGD up to this many documents per step (all ranks together),
# row-wise Adagrad above. Measured by bench/large_batch.py (README, "Large batches").
LARGEST_SGD_GLOBAL_BATCH = 64

# Default --lr per rule: fastText's for SGD; for Adagrad one rate for every batch, measured
# by bench/large_batch.py (one seed each). Debian at 1,024: lr 0.5 / 1 / 2 gave 0.739 / 0.745 /
# 0.745; AG at 1,024: lr 0.5 / 1 gave 0.880 / 0.880. At 4,096 the corpora disagree: Debian
# (10 epochs) lr 1 / 2 gave 0.715 / 0.728, AG lr 2 fell to 0.816 (0.876 at lr 0.5, 5 epochs).
DEFAULT_LR = {"sgd": 0.1, "adagrad": 1.0, "rowmean": 4.0}


def choose_optimizer(name: str, global_batch: int) -> str:
    """The rule a run uses: `name`, or for "auto" the one suited to `global_batch` documents a step."""
    if name != "auto":
        return name
    return "sgd" if global_batch <= LARGEST_SGD_GLOBAL_BATCH else "rowmean"


def default_batch_size(lr: float, world_size: int, largest: int = 64) -> int:
    """Documents per rank per step when none is given: `largest`, or fewer where lr x global
    batch would pass `STABLE_LR_TIMES_BATCH` (the paper's lr .5 datasets get 32 on one rank)."""
    return max(1, min(largest, int(STABLE_LR_TIMES_BATCH / (lr * world_size))))


def default_lr(optimizer: str, global_batch: int, sgd_lr: Optional[float] = None) -> float:
    """--lr when none is given: for SGD `sgd_lr` (a dataset's) or fastText's 0.1; for Adagrad its own."""
    rule = choose_optimizer(optimizer, global_batch)
    return (sgd_lr or DEFAULT_LR["sgd"]) if rule == "sgd" else DEFAULT_LR[rule]
