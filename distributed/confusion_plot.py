"""The confusion matrix as a picture a reader can check: class names on both axes, the counts
in the cells (an empty cell is a zero), the colour of each cell its share of the gold class's
documents, a colour bar.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, so no global figure state
and no display), in a process of its own (see `Dashboard.confusion`) at the lowest priority,
while training goes on. At 44 classes the first figure takes ~1.1 s, each later epoch's ~0.35 s.
"""
import os
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


class ConfusionFigure:
    """One split's figure, drawn again each epoch: the axes, names, colour bar and layout are made
    once (constrained layout and 88 tick labels took 0.8 of 1.1 s a figure at 44 classes), then
    each epoch changes only the colours and the counts."""

    def __init__(self, names: Sequence[str], title: str):
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # the drawing process's import, not the trainer's
        from matplotlib.figure import Figure
        n = len(names)
        side = max(MIN_SIDE_PX, CELL_PX * n + 240) / DPI
        self.figure = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
        FigureCanvasAgg(self.figure)
        self.axes = axes = self.figure.add_subplot()
        self.heat = axes.imshow(np.zeros((n, n)), cmap="Blues", vmin=0.0, vmax=1.0)
        bar = self.figure.colorbar(self.heat, ax=axes, fraction=0.046, pad=0.02)
        bar.set_label("share of the gold class's documents")
        labels = [_short(name) for name in names]
        self.font = 12 if n <= 10 else 9 if n <= 25 else 7
        axes.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center",
                        fontsize=self.font)
        axes.set_yticks(range(n), labels, fontsize=self.font)
        axes.set_xlabel("predicted", fontsize=13)
        axes.set_ylabel("gold", fontsize=13)
        axes.set_title(title, fontsize=13)
        self.counts = []
        self.laid_out = False

    def draw(self, matrix: np.ndarray) -> np.ndarray:
        """A (H, W, 3) uint8 RGB image of `matrix` (rows gold, columns predicted, counts).

        The side grows with the number of classes so that every cell keeps room for its count;
        a text per non-zero cell only: 44 classes with 279 non-zero cells draw in 0.6 s instead of
        1.2-1.4 s with all 1,936 counts.
        """
        totals = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
        self.heat.set_data(share)
        for count in self.counts:
            count.remove()
        self.counts = []
        if len(matrix) <= MAX_COUNTED_CLASSES:
            for gold, predicted in zip(*np.nonzero(matrix)):  # an empty cell is a zero: no text to draw
                count = self.axes.text(predicted, gold, str(int(matrix[gold, predicted])), ha="center",
                                       va="center", fontsize=self.font,
                                       color="white" if share[gold, predicted] > 0.5 else "black")
                count.set_in_layout(False)  # inside the axes: measuring it for the layout only costs time
                self.counts.append(count)
        self.figure.canvas.draw()
        if not self.laid_out:  # the counts are outside the layout, so the first one holds for every epoch
            self.figure.set_layout_engine("none")
            self.laid_out = True
        return np.asarray(self.figure.canvas.buffer_rgba())[:, :, :3].copy()


_figures = {}  # (class names, title) -> its ConfusionFigure, kept by the drawing process between epochs


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str) -> np.ndarray:
    """`ConfusionFigure.draw` of this split's figure, made at its first epoch."""
    key = (tuple(names), title)
    if key not in _figures:
        _figures[key] = ConfusionFigure(names, title)
    return _figures[key].draw(matrix)


def confusion_summary(tag: str, matrix: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """The figure as a serialized TensorBoard image `Summary` (PNG inside): what `add_image` writes,
    built where it was drawn, so only the encoded bytes travel back."""
    from tensorboardX.summary import image
    return image(tag, confusion_figure(matrix, names, title), dataformats="HWC").SerializeToString()


def start_drawing_process():
    """A drawing process's initializer. It ignores Ctrl-C: that stops the run, whose Dashboard
    then ends this process. And it runs at the lowest priority: a figure can wait, a step
    cannot. On 2 cores the trainer, its batch-prefetching process and this one (matplotlib's
    import, then ~0.6 s a figure at 44 classes) otherwise share the CPU evenly, and the
    prefetching process falls behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(19)
