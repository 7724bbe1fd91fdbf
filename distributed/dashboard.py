"""TensorBoard events, written by the root rank only (others get a no-op writer)."""
import json
from typing import Optional, Sequence

import numpy as np


def confusion_image(matrix: np.ndarray, cell: int = 24) -> np.ndarray:
    """A (3, H, W) heat map of row-normalised counts: white is 0, dark blue is all of a row."""
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    share = np.kron(share, np.ones((cell, cell)))
    white, blue = np.array([1.0, 1.0, 1.0]), np.array([0.03, 0.19, 0.42])
    image = white[:, None, None] * (1 - share) + blue[:, None, None] * share
    return image.astype(np.float32)


def confusion_markdown(matrix: np.ndarray, names: Sequence[str]) -> str:
    header = "| gold \\ predicted | " + " | ".join(names) + " |"
    rule = "|---" * (len(names) + 1) + "|"
    rows = [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(names, matrix)]
    return "\n".join([header, rule, *rows])


class Dashboard:
    """Scalars under `train/`, `test/`, `valid/`, `scaling/`; confusion matrices as image and table."""

    def __init__(self, logdir: Optional[str], enabled: bool):
        self.writer = None
        if logdir and enabled:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(logdir)

    def scalars(self, step: int, values: dict):
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def confusion(self, step: int, matrix: np.ndarray, names: Sequence[str], split: str = "test"):
        if self.writer:
            self.writer.add_image(f"{split}/confusion_matrix", confusion_image(matrix), step)
            self.writer.add_text(f"{split}/confusion_matrix", confusion_markdown(matrix, names), step)

    def settings(self, settings: dict):
        if self.writer:
            self.writer.add_text("run/settings", "```\n" + json.dumps(settings, indent=1) + "\n```", 0)

    def hparams(self, settings: dict, metrics: dict):
        if self.writer:
            flat = {k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))}
            self.writer.add_hparams(flat, {f"hparam/{k}": v for k, v in metrics.items()}, name="hparams")

    def flush(self):
        if self.writer:
            self.writer.flush()

    def close(self):
        if self.writer:
            self.writer.close()
