"""The confusion matrix as a picture a reader can check: class names on both axes, the counts
in the cells (an empty cell is a zero), the colour of each cell its share of the gold class's
documents, a colour bar.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, so no global figure state
and no display), in a process of its own (see `Dashboard.confusion`): the figure takes
0.6-2 s at 44 classes, and training goes on meanwhile.
"""
import signal
from typing import Sequence

import numpy as np

MIN_SIDE_PX = 600         # legible when TensorBoard shows the image at its own size
CELL_PX = 30              # many classes: a cell still holds a 4-digit count at the smallest font below
DPI = 100
LONGEST_NAME = 24         # characters of a class name shown on an axis
MAX_COUNTED_CLASSES = 60  # beyond, cells show colour only (the Text tab's table has the counts)


def _short(name: str) -> str:
    return name if len(name) <= LONGEST_NAME else name[:LONGEST_NAME - 1] + "…"


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str) -> np.ndarray:
    """A (H, W, 3) uint8 RGB image of `matrix` (rows gold, columns predicted, counts).

    The side grows with the number of classes so that every cell keeps room for its count;
    a text per non-zero cell only: 44 classes with 279 non-zero cells draw in 0.6 s instead of
    1.2-1.4 s with all 1,936 counts (it is drawn after every epoch).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the drawing process's import, not the trainer's
    from matplotlib.figure import Figure
    n = len(names)
    side = max(MIN_SIDE_PX, CELL_PX * n + 240) / DPI
    figure = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    heat = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    bar = figure.colorbar(heat, ax=axes, fraction=0.046, pad=0.02)
    bar.set_label("share of the gold class's documents")

    labels = [_short(name) for name in names]
    font = 12 if n <= 10 else 9 if n <= 25 else 7
    axes.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center",
                    fontsize=font)
    axes.set_yticks(range(n), labels, fontsize=font)
    axes.set_xlabel("predicted", fontsize=13)
    axes.set_ylabel("gold", fontsize=13)
    axes.set_title(title, fontsize=13)
    if n <= MAX_COUNTED_CLASSES:
        for gold, predicted in zip(*np.nonzero(matrix)):  # an empty cell is a zero: no text to draw
            count = axes.text(predicted, gold, str(int(matrix[gold, predicted])), ha="center", va="center",
                              fontsize=font, color="white" if share[gold, predicted] > 0.5 else "black")
            count.set_in_layout(False)  # inside the axes: measuring it for the layout only costs time

    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()


def confusion_summary(tag: str, matrix: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """The figure as a serialized TensorBoard image `Summary` (PNG inside): what `add_image` writes,
    built where it was drawn, so only the encoded bytes travel back."""
    from tensorboardX.summary import image
    return image(tag, confusion_figure(matrix, names, title), dataformats="HWC").SerializeToString()


def ignore_interrupts():
    """A drawing process's initializer: Ctrl-C stops the run, whose Dashboard then ends this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
