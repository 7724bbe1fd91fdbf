"""How many documents a step may sum at a given learning rate; no MXNet, so entry points
can decide it before MXNet loads."""

# lr x global batch sets how far a step moves (summed gradients: see model/sgd.py). On AG
# News softmax training diverges above this (lr .5 at 64 documents does, at 32 it does
# not; lr 1 at 32 does).
STABLE_LR_TIMES_BATCH = 16.0


def default_batch_size(lr: float, world_size: int, largest: int = 64) -> int:
    """Documents per rank per step when none is given: `largest`, or fewer where lr x global
    batch would pass `STABLE_LR_TIMES_BATCH` (the paper's lr .5 datasets get 32 on one rank)."""
    return max(1, min(largest, int(STABLE_LR_TIMES_BATCH / (lr * world_size))))
