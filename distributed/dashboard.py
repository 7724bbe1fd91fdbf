"""TensorBoard events, written by the root rank only (others get a no-op writer).

A training run shows (README "TensorBoard"): curves under `train/`, `test/`, `valid/`,
`scaling/` (every --log-every steps) and `scaling_per_epoch/` (at each epoch's last step;
every curve is plotted against the global step); the run's world and totals under
`summary/`; a Custom Scalars layout with one chart per question (`training_layout`); an
HParams entry (`training_hparams`, TRAINING_METRICS); the confusion matrices as images and
tables; the settings as text.
"""
import json
import time
from collections import deque
from typing import Dict, Optional, Sequence, Union

import numpy as np

HParamValue = Union[bool, int, float, str]

# A finished run's totals (keys of `Trainer._run_metrics`) written as `summary/` scalars, by display name.
RUN_TOTALS = {"train_seconds": "train seconds", "examples_per_second": "examples/s", "efficiency": "efficiency"}
# What the HParams table compares runs by: the last values of these scalar tags, by display name.
TRAINING_METRICS = {"test/accuracy": "test accuracy", "valid/accuracy": "validation accuracy",
                    **{f"summary/{key}": name for key, name in RUN_TOTALS.items()}}


def training_hparams(config, world_size: int, global_batch_size: int) -> Dict[str, HParamValue]:
    """The settings runs are compared by, under names a reader needs no manual for.

    `config` is a TrainConfig; `optimizer` is listed where the config has one.
    """
    values = {"lr": config.lr, "dim": config.dim, "epoch": config.epoch, "word_ngrams": config.word_ngrams,
              "bucket": config.bucket, "loss": config.loss}
    if getattr(config, "optimizer", None) is not None:
        values["optimizer"] = config.optimizer
    values.update(batch_per_rank=config.batch_size, ranks=world_size, global_batch=global_batch_size)
    return values


def training_layout(world_size: int, efficiency: bool) -> dict:
    """The Custom Scalars layout (tensorboardX's {section: {chart: ["Multiline", [tag regex, ...]]}}).

    A chart's content does not depend on the number of ranks (the rank tags are matched by a
    pattern), so TensorBoard merges the layouts of runs in one logdir into one set of charts;
    a section or chart appears only where the run has its data.
    """
    layout = {
        "Training": {"training loss": ["Multiline", [r"^train/loss$"]],
                     "learning rate": ["Multiline", [r"^train/learning_rate$"]]},
        "Quality": {"accuracy: test and validation": ["Multiline", [r"^(test|valid)/accuracy$"]],
                    "loss: training, test and validation": ["Multiline", [r"^(train|test|valid)/loss$"]]},
        "Throughput": {"examples/s: all ranks and each rank": [
            "Multiline", [r"^scaling/examples_per_second$", r"^scaling/rank_\d+/examples_per_second$"]]},
    }
    scaling = {}
    if efficiency:
        scaling["efficiency against the ideal (1.0)"] = ["Multiline", [r"^scaling/(ideal_)?efficiency$"]]
    if world_size > 1:
        scaling["seconds per step: compute vs communicate"] = [
            "Multiline", [r"^scaling/(compute|communicate)_seconds_per_step$"]]
        scaling["bytes per step: sparse exchange vs dense all-reduce"] = [
            "Multiline", [r"^scaling/(bytes|dense_allreduce_bytes)_per_step$"]]
    if scaling:
        layout["Scaling"] = scaling
    return layout


def _hparams_summaries(values: Dict[str, HParamValue], metrics: Dict[str, str]):
    """The HParams plugin's three summaries for one session: the experiment (names and types
    of the hparams, the metric tags), the session's values, and its successful end.

    No domains are declared: TensorBoard keeps the experiment of one run per logdir, and a
    domain taken from one run would hide the other runs' values from the HParams filters.
    Numbers are the protocol's one numeric type (float64); integers keep integral values.
    """
    from tensorboardX.proto.api_pb2 import DataType, Experiment, HParamInfo, MetricInfo, MetricName, Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    start = SessionStartInfo()
    infos = []
    for name, value in values.items():
        if value is None:  # a setting not given: no value to compare by
            continue
        if isinstance(value, bool):
            start.hparams[name].bool_value, kind = value, "DATA_TYPE_BOOL"
        elif isinstance(value, str):
            start.hparams[name].string_value, kind = value, "DATA_TYPE_STRING"
        else:
            start.hparams[name].number_value, kind = value, "DATA_TYPE_FLOAT64"
        infos.append(HParamInfo(name=name, type=DataType.Value(kind)))
    experiment = Experiment(hparam_infos=infos, metric_infos=[
        MetricInfo(name=MetricName(tag=tag), display_name=display) for tag, display in metrics.items()])
    contents = {"_hparams_/experiment": HParamsPluginData(experiment=experiment),
                "_hparams_/session_start_info": HParamsPluginData(session_start_info=start),
                "_hparams_/session_end_info": HParamsPluginData(
                    session_end_info=SessionEndInfo(status=Status.Value("STATUS_SUCCESS")))}
    summaries = []
    for tag, content in contents.items():
        plugin_data = SummaryMetadata.PluginData(plugin_name="hparams", content=content.SerializeToString())
        summaries.append(Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin_data))]))
    return summaries


def confusion_markdown(matrix: np.ndarray, names: Sequence[str]) -> str:
    header = "| gold \\ predicted | " + " | ".join(names) + " |"
    rule = "|---" * (len(names) + 1) + "|"
    rows = [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(names, matrix)]
    return "\n".join([header, rule, *rows])


class FigureDrawer:
    """The process that draws confusion figures, spawned by the first one. Autotune's trials
    share their search's drawer: spawning one per run cost each trial ~1.5 s of CPU."""

    def __init__(self):
        self._pool = None

    def submit(self, draw, *args):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            from .confusion_plot import start_drawing_process
            # Spawned, not forked: the trainer holds MXNet's threads and a 400 MB input matrix.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=start_drawing_process)
        return self._pool.submit(draw, *args)

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class Dashboard:
    """One TensorBoard run: scalars, images, text, a Custom Scalars layout, an HParams entry."""

    def __init__(self, logdir: Optional[str], enabled: bool, drawer: Optional[FigureDrawer] = None):
        """`drawer`: one shared with other dashboards, which this one leaves running; by default its own."""
        self.writer = None
        self.drawer = drawer or FigureDrawer()
        self._owns_drawer = drawer is None
        self._drawing = deque()    # (step, wall time, future of the image summary), in submission order
        if logdir and enabled:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(logdir)

    def scalars(self, step: int, values: dict):
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def confusion(self, step: int, matrix: np.ndarray, names: Sequence[str], split: str = "test"):
        """The matrix as a table now and as an image once drawn: the figure is drawn in a process of
        its own at the lowest priority (drawn in the trainer it held up each epoch of a Debian run
        by 1.6 s at 44 classes, under load), and its event is written by a later `flush` or
        `close`, with this step and this wall time."""
        if self.writer:
            from .confusion_plot import confusion_summary
            title = {"test": "test set", "valid": "validation set"}.get(split, split)
            tag = f"{split}/confusion_matrix"
            self._drawing.append((step, time.time(), self.drawer.submit(
                confusion_summary, tag, np.asarray(matrix), list(names), title)))
            self.writer.add_text(tag, confusion_markdown(matrix, names), step)

    def _write_drawn(self, wait: bool):
        """Write the figures drawn so far (with `wait`, all of them), in the order they were asked for."""
        from concurrent.futures.process import BrokenProcessPool
        from tensorboardX.proto.summary_pb2 import Summary
        while self._drawing and (wait or self._drawing[0][2].done()):
            step, wall_time, drawn = self._drawing.popleft()
            try:
                summary = Summary.FromString(drawn.result())
            except BrokenProcessPool:  # killed with the run's process group (a launcher's SIGTERM): not the run's error
                from .logs import log
                log.warning(f"warning: confusion images from step {step} on not written: their drawing process ended")
                self._drawing.clear()
                return
            self.writer.file_writer.add_summary(summary, step, wall_time)

    def settings(self, settings: dict):
        if self.writer:
            self.writer.add_text("run/settings", "```\n" + json.dumps(settings, indent=1) + "\n```", 0)

    def layout(self, layout: dict):
        """The Custom Scalars layout (see `training_layout`); once per run."""
        if self.writer:
            self.writer.add_custom_scalars(layout)

    def hparams(self, values: Dict[str, HParamValue], metrics: Dict[str, str]):
        """This run as one HParams session: `values` by name, compared by the last values of
        the scalar tags `metrics` (tag: display name). Written into the run itself, so it adds
        no run of its own."""
        if self.writer:
            for summary in _hparams_summaries(values, metrics):
                self.writer.file_writer.add_summary(summary)

    def training_started(self, settings: dict, world_size: int, global_batch_size: int,
                         single_worker_rate: Optional[float], step: int):
        """The world a training run starts with (ranks, global batch, the single-worker rate
        efficiency divides by) as `summary/` scalars and in the settings text; the layout."""
        world = {"world_size": world_size, "global_batch_size": global_batch_size}
        if single_worker_rate:
            world["single_worker_examples_per_second"] = single_worker_rate
        self.settings({**world, **settings})
        self.layout(training_layout(world_size, efficiency=bool(single_worker_rate)))
        self.scalars(step, {f"summary/{key}": value for key, value in world.items()})

    def training_finished(self, hparams: Dict[str, HParamValue], run_metrics: dict, step: int):
        """The finished run's totals (RUN_TOTALS of `Trainer._run_metrics`) as `summary/` scalars, and its
        HParams entry."""
        self.scalars(step, {f"summary/{key}": run_metrics[key] for key in RUN_TOTALS if key in run_metrics})
        self.hparams(hparams, TRAINING_METRICS)

    def flush(self):
        if self.writer:
            self._write_drawn(wait=False)
            self.writer.flush()

    def close(self):
        if self.writer:
            try:
                self._write_drawn(wait=True)
            finally:
                if self._owns_drawer:
                    self.drawer.close()
                self.writer.close()
