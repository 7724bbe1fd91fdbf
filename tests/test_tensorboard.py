"""What training logs is what a real TensorBoard server shows.

One model is trained on real AG News rows with a logdir (a tenth held out for validation);
a `tensorboard` process serves that logdir and every check reads the data back through its
HTTP API, as the web UI does.
"""
import html
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli, write_sample

pytestmark = pytest.mark.slow  # every test reads the one served run: a training and a server start

BASE_LR = 0.5
EPOCHS = 5
SCALAR_TAGS = ("train/loss", "train/learning_rate", "train/examples_per_second", "train/tokens_per_second",
               "test/accuracy", "test/precision_at_1", "test/recall_at_1")
TENSORBOARD = Path(sys.executable).parent / "tensorboard"
START_TIMEOUT_S = 60
SETTINGS = {"lr": 0.5, "dim": 5, "epoch": EPOCHS, "word_ngrams": 2, "bucket": 10000, "loss": "softmax", "ranks": 1}
# Integers in the HParams protocol's one numeric type; `optimizer` only once TrainConfig has it.
NUMBER_HPARAMS = {"lr", "dim", "epoch", "word_ngrams", "bucket", "batch_per_rank", "ranks", "global_batch"}
STRING_HPARAMS = {"loss"}
HPARAMS_METRICS = {"test/accuracy", "valid/accuracy", "summary/train_seconds", "summary/examples_per_second",
                   "summary/efficiency"}
MIN_IMAGE_SIDE = 600


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained with TensorBoard logging, and evaluate.py's report on its test file."""
    root = tmp_path_factory.mktemp("tensorboard_run")
    data = write_sample(root / "data", 2000, 200)
    model_dir, logdir = root / "model", root / "model" / "tb"
    done = run_cli("train", "--train", data / "train.csv", "--test", data / "test.csv", "--model-dir", model_dir,
                   "--logdir", logdir, "--cache-dir", root / "cache", "--epoch", EPOCHS, "--dim", "5",
                   "--bucket", "10000", "--word-ngrams", "2", "--lr", BASE_LR, "--log-every", "5",
                   "--valid-fraction", "0.1")
    assert done.returncode == 0, done.stderr
    report_path = root / "report.json"
    done = run_cli("evaluate", "--model-dir", model_dir, "--test", data / "test.csv", "--metrics-out", report_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    printed = [line for line in done.stdout.splitlines() if line.startswith("accuracy\t")]
    assert printed and abs(float(printed[0].split("\t")[1]) - report["accuracy"]) < 5e-5
    return {"logdir": logdir, "report": report}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TensorBoardClient:
    def __init__(self, base: str):
        self.base = base

    def get(self, path: str, **params):
        """GET `path` with query `params`: JSON decoded, or raw bytes for anything else."""
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
            if response.headers.get_content_type() == "application/json":
                return json.loads(body)
            return body

    def scalars(self, run: str, tag: str):
        """(step, value) pairs of a scalar series, in step order."""
        points = self.get("/data/plugin/scalars/scalars", run=run, tag=tag)
        return sorted((step, value) for _wall_time, step, value in points)

    def hparams(self, route: str, **request):
        """An HParams plugin route, asked as the web UI asks (a JSON request)."""
        return self.get(f"/data/plugin/hparams/{route}", request=json.dumps({"experimentName": "", **request}))


def loaded(client: TensorBoardClient) -> bool:
    """The server lists the run and has read every epoch's test accuracy and the run's totals."""
    try:
        if "." not in client.get("/data/runs"):
            return False
        return (len(client.scalars(".", "test/accuracy")) == EPOCHS
                and "summary/train_seconds" in client.get("/data/plugin/scalars/tags")["."])
    except (urllib.error.URLError, ConnectionError, OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def tensorboard(trained, tmp_path_factory):
    """A real TensorBoard server on a free local port, serving the run; stopped afterwards."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("tensorboard_server") / "server.log", "w+b")
    server = subprocess.Popen([str(TENSORBOARD), "--logdir", str(trained["logdir"]), "--host", "127.0.0.1",
                               "--port", str(port), "--load_fast=false"],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        client = TensorBoardClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not loaded(client):
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"tensorboard did not serve the run (exit {server.poll()}):\n{log.read().decode()}")
            time.sleep(0.5)
        yield client
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_every_training_and_test_scalar_is_served(tensorboard):
    """Loss, learning rate, both throughputs and the three test metrics are scalar tags of the run."""
    tags = tensorboard.get("/data/plugin/scalars/tags")["."]
    for tag in SCALAR_TAGS:
        assert tag in tags, sorted(tags)


def test_throughput_scalars_are_positive_and_finite(tensorboard):
    """examples/s and tokens/s are real rates at every logged step."""
    for tag in ("train/examples_per_second", "train/tokens_per_second"):
        values = [v for _, v in tensorboard.scalars(".", tag)]
        assert len(values) > 5
        assert all(math.isfinite(v) and v > 0 for v in values), values


def test_learning_rate_decreases_within_zero_and_base_lr(tensorboard):
    """The logged learning rate decays linearly from --lr: strictly falling, always in (0, lr]."""
    points = tensorboard.scalars(".", "train/learning_rate")
    assert len(points) > 10
    values = [v for _, v in points]
    assert all(0 < v <= BASE_LR * (1 + 1e-6) for v in values), values
    assert all(later < earlier for earlier, later in zip(values, values[1:])), values


def test_training_loss_is_finite_and_falls(tensorboard):
    """Every logged loss is finite, and the last is below the first."""
    values = [v for _, v in tensorboard.scalars(".", "train/loss")]
    assert len(values) > 10
    assert all(math.isfinite(v) for v in values), values
    assert values[-1] < values[0], values


def test_test_accuracy_is_logged_per_epoch_and_ends_at_evaluate_accuracy(tensorboard, trained):
    """One accuracy per epoch; the last is what evaluate.py reports for the saved model."""
    points = tensorboard.scalars(".", "test/accuracy")
    assert len(points) == EPOCHS
    assert len({step for step, _ in points}) == EPOCHS
    final = points[-1][1]
    assert final == pytest.approx(trained["report"]["accuracy"], abs=1e-6)
    assert final > 0.5
    for tag in ("test/precision_at_1", "test/recall_at_1"):
        assert len(tensorboard.scalars(".", tag)) == EPOCHS


def test_confusion_matrix_image_is_served_per_epoch_as_a_png_at_least_600_px(tensorboard):
    """One PNG per epoch for each split, large enough to read class names and counts at its own size."""
    tags = tensorboard.get("/data/plugin/images/tags")["."]
    for split in ("test", "valid"):
        assert f"{split}/confusion_matrix" in tags, tags
        images = tensorboard.get("/data/plugin/images/images", run=".", tag=f"{split}/confusion_matrix", sample=0)
        assert len(images) == EPOCHS
        png = tensorboard.get("/data/plugin/images/individualImage?" + images[-1]["query"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk, first after the signature
        assert width >= MIN_IMAGE_SIDE and height >= MIN_IMAGE_SIDE, (width, height)


def test_a_redrawn_confusion_figure_is_the_figure_drawn_afresh():
    """Each epoch redraws its split's figure: nothing of the previous matrix (its colours, its counts) stays."""
    import numpy as np

    from fasttext_horovod.distributed.confusion_plot import ConfusionFigure
    names = [f"class {i}" for i in range(12)]
    rng = np.random.default_rng(0)
    first, second = (rng.integers(0, 30, size=(12, 12)) * (rng.random((12, 12)) < 0.3) for _ in range(2))
    kept = ConfusionFigure(names, "test set")
    before = kept.draw(first)
    redrawn = kept.draw(second)
    assert not np.array_equal(before, redrawn)
    np.testing.assert_array_equal(redrawn, ConfusionFigure(names, "test set").draw(second))


def test_runs_list_holds_only_the_run(tensorboard):
    """The HParams entry lives in the run itself: no extra `hparams` run beside it."""
    assert tensorboard.get("/data/runs") == ["."]


def test_custom_scalars_layout_has_one_chart_per_question_and_every_chart_has_data(tensorboard):
    """Training, Quality and Throughput sections; a one-process run without --baseline-rate
    has no Scaling section. Every chart draws series the server serves (the per-rank pattern
    of the Throughput chart matches only when there are ranks)."""
    layout = tensorboard.get("/data/plugin/custom_scalars/layout")
    charts = {category["title"]: {chart["title"]: chart["multiline"]["tag"] for chart in category["chart"]}
              for category in layout["category"]}
    assert list(charts) == ["Training", "Quality", "Throughput"], charts
    for section, section_charts in charts.items():
        for title, patterns in section_charts.items():
            served = [tensorboard.get("/data/plugin/custom_scalars/scalars", run=".", tag=pattern)
                      for pattern in patterns]
            assert all(series["regex_valid"] for series in served), (section, title, patterns)
            assert any(series["tag_to_events"] for series in served), (section, title, patterns)
    accuracy = tensorboard.get("/data/plugin/custom_scalars/scalars", run=".",
                               tag=charts["Quality"]["accuracy: test and validation"][0])
    assert set(accuracy["tag_to_events"]) == {"test/accuracy", "valid/accuracy"}


def test_one_process_run_has_no_communication_or_per_rank_tags(tensorboard):
    """A world of one exchanges nothing: no zero-valued traffic or wait curves, no rank copies of the rate."""
    tags = tensorboard.get("/data/plugin/scalars/tags")["."]
    pattern = re.compile(r"communicate|bytes_per_step|/rank_\d+/")
    assert not [tag for tag in tags if pattern.search(tag)], sorted(tags)


def test_world_and_run_totals_are_scalars(tensorboard):
    """Ranks, global batch and the run's time and rate under `summary/`; no efficiency without a baseline."""
    value = {tag: tensorboard.scalars(".", tag)[-1][1] for tag in tensorboard.get("/data/plugin/scalars/tags")["."]
             if tag.startswith("summary/")}
    assert value["summary/world_size"] == 1
    assert value["summary/global_batch_size"] > 0 and value["summary/global_batch_size"].is_integer()
    assert value["summary/train_seconds"] > 0 and value["summary/examples_per_second"] > 0
    assert "summary/efficiency" not in value and "summary/single_worker_examples_per_second" not in value


def test_hparams_lists_the_settings_that_matter_with_their_types_and_metrics(tensorboard):
    """The HParams experiment: the compared settings, numbers as numbers and the loss a string,
    and the five metrics; the session holds this run's values, integers integral."""
    experiment = tensorboard.hparams("experiment")
    types = {info["name"]: info["type"] for info in experiment["hparamInfos"]}
    optional = {"optimizer"} & set(types)
    assert set(types) == NUMBER_HPARAMS | STRING_HPARAMS | optional, types
    assert all(types[name] == "DATA_TYPE_FLOAT64" for name in NUMBER_HPARAMS), types
    assert all(types[name] == "DATA_TYPE_STRING" for name in STRING_HPARAMS | optional), types
    assert {info["name"]["tag"] for info in experiment["metricInfos"]} == HPARAMS_METRICS
    groups = tensorboard.hparams("session_groups", allowedStatuses=["STATUS_SUCCESS"], colParams=[], startIndex=0,
                                 sliceSize=10)["sessionGroups"]
    assert [group["name"] for group in groups] == ["."]
    values = groups[0]["hparams"]
    assert {name: values[name] for name in SETTINGS} == SETTINGS
    assert values["global_batch"] == values["batch_per_rank"] * values["ranks"]
    assert all(float(values[name]).is_integer() for name in NUMBER_HPARAMS - {"lr"}), values
    metrics = {metric["name"]["tag"]: metric["value"] for metric in groups[0]["metricValues"]}
    assert metrics["test/accuracy"] == pytest.approx(tensorboard.scalars(".", "test/accuracy")[-1][1])
    assert metrics["valid/accuracy"] == pytest.approx(tensorboard.scalars(".", "valid/accuracy")[-1][1])
    assert metrics["summary/train_seconds"] > 0


def test_run_settings_are_served_as_text(tensorboard):
    """The run's settings are a text tag holding the flags it was trained with."""
    tags = tensorboard.get("/data/plugin/text/tags")["."]
    settings_tag = next((tag for tag in tags if tag.startswith("run/settings")), None)
    assert settings_tag is not None, tags
    entries = tensorboard.get("/data/plugin/text/text", run=".", tag=settings_tag)
    assert entries
    text = html.unescape(entries[0]["text"])
    assert f'"lr": {BASE_LR}' in text and f'"epoch": {EPOCHS}' in text and '"log_every": 5' in text
    assert '"world_size": 1' in text and '"global_batch_size": ' in text


def test_dashboards_sharing_a_drawer_each_get_their_figure_from_one_process(tmp_path):
    """Autotune's trials share their search's drawer: a dashboard closing leaves it drawing for the next."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fasttext_horovod.distributed.dashboard import Dashboard, FigureDrawer
    drawer = FigureDrawer()
    try:
        drawing_pids = []
        for run in ("trial-1", "trial-2"):
            dashboard = Dashboard(str(tmp_path / run), True, drawer)
            dashboard.confusion(1, np.array([[3, 1], [0, 4]]), ["a", "b"])
            dashboard.close()
            drawing_pids.append(drawer.submit(os.getpid).result())
        assert drawing_pids[0] == drawing_pids[1] != os.getpid()
        for run in ("trial-1", "trial-2"):
            events = EventAccumulator(str(tmp_path / run), size_guidance={"images": 0})
            events.Reload()
            assert events.Tags()["images"] == ["test/confusion_matrix"]
    finally:
        drawer.close()


def test_figures_are_drawn_at_the_lowest_priority():
    """The drawing process yields the CPU to the trainer and its batch prefetching (nice 19)."""
    from fasttext_horovod.distributed.dashboard import FigureDrawer
    drawer = FigureDrawer()
    try:
        assert drawer.submit(os.nice, 0).result() == 19 and os.nice(0) < 19
    finally:
        drawer.close()
