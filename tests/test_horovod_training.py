"""Two Horovod ranks train the model one process trains, and only rank 0 speaks.

Real jobs on real AG News rows: `horovodrun -np 2` (Gloo and MPI controllers) with
--batch-size B against one process with --batch-size 2B. Batches depend only on the
global batch, so the two must end with the same weights up to float rounding, and the
same accuracy.
"""
import json
import re

import pytest
from conftest import AG_NEWS, write_sample
from fasttext_horovod.model.checkpoint import load_checkpoint
from fasttext_horovod.model.step_size import default_lr
from horovod_jobs import (CONTROLLERS, TRAIN_SETTINGS, assert_same_optimizer_state, assert_same_weights, run,
                          train_command)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

pytestmark = [pytest.mark.horovod, pytest.mark.slow]

OUTPUT_TAG = re.compile(r"\[\d+(,\d+)?\]<(stdout|stderr)>:")  # what the launchers prefix to each piece of output


def train(tmp_path, controller, num_proc, batch_size, *extra, data=AG_NEWS):
    """Train into tmp_path/<controller>-np<N>-b<B> (ranks' output in its `output/`); returns that directory."""
    model_dir = tmp_path / f"{controller}-np{num_proc}-b{batch_size}"
    done = run(train_command(controller, num_proc, "--train", data / "train.csv", "--test", data / "test.csv",
                             "--model-dir", model_dir, "--cache-dir", tmp_path / "cache",
                             "--metrics-out", model_dir / "metrics.json", "--batch-size", batch_size, *TRAIN_SETTINGS,
                             *extra, output_dir=model_dir / "output"))
    assert done.returncode == 0, done.stdout + done.stderr
    return model_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with batch 64, and two ranks with batch 32 under each controller (Gloo logs to TensorBoard)."""
    root = tmp_path_factory.mktemp("horovod_runs")
    single = train(root, "none", 1, 64)
    ranks = {controller: train(root, controller, 2, 32, *(["--logdir", root / "tb"] if controller == "gloo" else []))
             for controller in CONTROLLERS}
    return {"single": single, "ranks": ranks, "logdir": root / "tb"}


def rank_output(model_dir, rank: int, stream: str) -> list:
    """Lines rank `rank` wrote to `stream`, without the launcher's tags."""
    (path,) = (model_dir / "output").glob(f"**/rank.{rank}/{stream}")
    return [OUTPUT_TAG.sub("", line) for line in path.read_text(errors="replace").splitlines()]


def metrics(model_dir) -> dict:
    return json.loads((model_dir / "metrics.json").read_text())


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_two_ranks_end_with_the_weights_of_one_process(runs, controller):
    """Same global batch, seed and data: the same model to float tolerance, after 5 epochs."""
    assert_same_weights(runs["ranks"][controller], runs["single"])


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_two_rank_accuracy_is_within_half_a_point_of_one_process(runs, controller):
    single, ranks = metrics(runs["single"]), metrics(runs["ranks"][controller])
    assert single["accuracy"] > 0.8
    assert abs(ranks["accuracy"] - single["accuracy"]) <= 0.005, (ranks["accuracy"], single["accuracy"])
    assert ranks["world_size"] == 2 and ranks["global_batch_size"] == single["global_batch_size"] == 64


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_only_rank_0_prints(runs, controller):
    """Rank 1 says nothing at all (not even MXNet's engine banner); rank 0 prints the result line."""
    model_dir = runs["ranks"][controller]
    assert [line for line in rank_output(model_dir, 1, "stdout") if line.strip()] == []
    assert [line for line in rank_output(model_dir, 1, "stderr") if line.strip()] == []
    assert json.loads(rank_output(model_dir, 0, "stdout")[0])["accuracy"] > 0.8


def test_only_rank_0_writes_tensorboard_events(runs):
    events = sorted(p.name for p in runs["logdir"].rglob("events.out.tfevents.*"))
    assert len(events) == 1, events  # one run, its HParams entry included


def test_scaling_dashboard_shows_rates_split_traffic_and_efficiency(runs):
    """Per step and per epoch: each rank's rates, compute/communicate split, bytes, efficiency."""
    events = EventAccumulator(str(runs["logdir"]), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for group in ("scaling", "scaling_per_epoch"):
        for name in ("rank_0/examples_per_second", "rank_1/examples_per_second", "rank_0/tokens_per_second",
                     "rank_1/tokens_per_second", "examples_per_second", "compute_seconds_per_step",
                     "communicate_seconds_per_step", "communicate_fraction", "bytes_per_step",
                     "dense_allreduce_bytes_per_step", "efficiency"):
            assert f"{group}/{name}" in tags, sorted(tags)
    assert len(events.Scalars("scaling_per_epoch/efficiency")) == 5
    efficiency = [e.value for e in events.Scalars("scaling/efficiency")]
    assert len(efficiency) > 10 and all(0 < value < 2 for value in efficiency), efficiency
    sparse = [e.value for e in events.Scalars("scaling/bytes_per_step")]
    dense = [e.value for e in events.Scalars("scaling/dense_allreduce_bytes_per_step")]
    # A 100k-bucket table keeps the test fast; the gap grows with --bucket (bench/scaling.py).
    assert all(0 < s < 0.05 * d for s, d in zip(sparse, dense)), (sparse, dense)
    run_metrics = metrics(runs["ranks"]["gloo"])
    assert run_metrics["single_worker_examples_per_second"] > 0 and 0 < run_metrics["efficiency"] < 2
    assert {e.value for e in events.Scalars("scaling/ideal_efficiency")} == {1.0}


def test_world_is_on_the_dashboard_and_the_layout_has_the_scaling_charts(runs):
    """Ranks, global batch and the single-worker rate as scalars; the Custom Scalars layout's
    Scaling section answers efficiency, time split and traffic."""
    events = EventAccumulator(str(runs["logdir"]), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    run_metrics = metrics(runs["ranks"]["gloo"])
    assert [e.value for e in events.Scalars("summary/world_size")] == [2]
    assert [e.value for e in events.Scalars("summary/global_batch_size")] == [64]
    (rate,) = events.Scalars("summary/single_worker_examples_per_second")
    assert rate.value == pytest.approx(run_metrics["single_worker_examples_per_second"], rel=1e-6)
    (config,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    assert [category.title for category in layout.category] == ["Training", "Quality", "Throughput", "Scaling"]
    assert [chart.title for chart in layout.category[3].chart] == [
        "efficiency against the ideal (1.0)", "seconds per step: compute vs communicate",
        "bytes per step: sparse exchange vs dense all-reduce"]


NESTEROV_STATE = ("row_velocity", "row_last_step", "optimizer_step", "output_history")


@pytest.mark.parametrize("optimizer, batch, epoch, rule, state", [
    ("auto", 1024, 5, "rowmean", ("output_history",)),
    ("adagrad", 1024, 5, "adagrad", ("row_history", "output_history")),
    ("auto", 4096, 10, "nesterov", NESTEROV_STATE)])
def test_two_ranks_at_a_large_global_batch_train_as_one_process(tmp_path, optimizer, batch, epoch, rule, state):
    """Global batch 1,024 (auto: row-mean SGD at its default rate, whose per-row document counts the
    ranks sum; or row-wise Adagrad) or 4,096 (auto: row-mean SGD with lazy Nesterov momentum, whose
    state derives from the summed row message alone): 2 ranks x B/2 end with 1 process x B's weights
    and state."""
    lr = default_lr(optimizer, batch) if optimizer == "auto" else 0.25
    extra = ("--optimizer", optimizer, "--lr", str(lr), "--epoch", str(epoch))
    single = train(tmp_path, "none", 1, batch, *extra)
    ranks = train(tmp_path, "gloo", 2, batch // 2, *extra)
    assert_same_weights(ranks, single, rtol=1e-5)
    (single_state, single_meta), (ranks_state, ranks_meta) = (load_checkpoint(str(d / "checkpoint.npz"))
                                                              for d in (single, ranks))
    assert single_meta["optimizer"] == ranks_meta["optimizer"] == rule
    assert_same_optimizer_state(ranks_state, single_state, state)
    assert metrics(single)["accuracy"] > 0.8


@pytest.mark.parametrize("optimizer", ["sgd", "rowmean", "nesterov"])
def test_ranks_with_empty_shares_of_a_step_still_match_one_process(tmp_path, optimizer):
    """Global batch 2 over 3 shards: in some steps all documents are rank 0's, rank 1 sends no rows
    (row-mean SGD: no rows and no document counts)."""
    data = write_sample(tmp_path / "data", 300, 100)
    extra = ("--num-shards", "3", "--epoch", "1", "--optimizer", optimizer)
    single = train(tmp_path, "none", 1, 2, *extra, data=data)
    ranks = train(tmp_path, "gloo", 2, 1, *extra, data=data)
    assert_same_weights(ranks, single)


def test_early_stopping_under_horovod_stops_where_one_process_does(tmp_path, tiny_data_dir):
    """Rank 0 validates and decides; both ranks stop at its epoch, with one process's weights."""
    extra = ("--valid-fraction", "0.2", "--early-stopping", "--patience", "2", "--epoch", "40")
    single = train(tmp_path, "none", 1, 64, *extra, data=tiny_data_dir)
    ranks = train(tmp_path, "gloo", 2, 32, *extra, data=tiny_data_dir)
    assert metrics(ranks)["epoch"] == metrics(single)["epoch"] < 38
    assert metrics(ranks)["valid"]["accuracy"] == metrics(single)["valid"]["accuracy"]
    assert_same_weights(ranks, single)
