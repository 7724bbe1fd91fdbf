"""Train a fastText classifier: one process (CPU or --gpu N) or one rank per GPU under horovodrun.

    python launch/train.py --train train.csv --test test.csv --model-dir runs/ag --logdir runs/ag/tb
    horovodrun -np 4 python launch/train.py --dataset yelp_polarity --data-root data --gpu 0 ...
    horovodrun -np 2 python launch/train.py --train train.csv --batch-size 32 ...   (CPU ranks)
    python launch/train.py --train train.csv --autotune-validation valid.csv --autotune-duration 300 ...
"""
import argparse
import json
import os

from fasttext_horovod.distributed.launcher import threads_per_rank
from fasttext_horovod.distributed.logs import log, results
from fasttext_horovod.launch.common import configure_mxnet, run_cli


def parse_args(argv=None):
    """The TrainConfig flags (generated from the dataclass) plus what only this command needs."""
    from fasttext_horovod.distributed.settings import add_config_arguments
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = add_config_arguments(parser)
    groups["data"].add_argument("--data-root", default="data", help="where `download.py` put the datasets")
    groups["output"].add_argument("--metrics-out", help="write final metrics here as JSON")
    groups["fastText settings"].add_argument(
        "--thread", type=int, help="CPU threads for MXNet operators (under Horovod: the node's cores / its ranks)")
    tune = parser.add_argument_group("autotune (fastText's): search lr, dim, epoch, word n-grams, bucket, loss; "
                                     "settings given explicitly are not searched")
    tune.add_argument("--autotune-validation", metavar="FILE",
                      help="search settings that score best on this labelled file; keep the best model")
    tune.add_argument("--autotune-duration", type=float, default=300.0, metavar="SECONDS",
                      help="time budget of the search (300)")
    tune.add_argument("--autotune-metric", choices=("f1", "accuracy"), default="f1",
                      help="validation score to maximise: f1 of P@k and R@k (fastText's), or accuracy")
    args = parser.parse_args(argv)
    if args.thread is not None and args.thread < 1:
        from fasttext_horovod.data_pipeline.errors import InputError
        raise InputError("--thread", f"must be at least 1, got {args.thread}")
    check_autotune_args(parser, args, argv)
    return args


def build_config(args):
    """The run's TrainConfig: --dataset fills --train and --test where they were not given (and
    TrainConfig takes the dataset's --lr where that is the default)."""
    from fasttext_horovod.data_pipeline.datasets import DATASETS
    from fasttext_horovod.distributed.settings import config_from_args
    resolved = {}
    if args.dataset:
        spec = DATASETS[args.dataset]
        resolved = dict(train=args.train or spec.train_path(args.data_root),
                        test=args.test or spec.test_path(args.data_root))
    return config_from_args(args, **resolved)


def check_autotune_args(parser, args, argv):
    """A positive budget, no second validation set, and the settings the command line fixed."""
    if not 0 < args.autotune_duration < float("inf"):
        parser.error(f"--autotune-duration must be a positive number of seconds, got {args.autotune_duration:g}")
    if args.autotune_validation and (args.valid or args.valid_fraction or args.resume or args.early_stopping):
        parser.error("--autotune-validation does not combine with --valid, --valid-fraction, --resume "
                     "or --early-stopping")
    args.autotune_fixed = explicit_settings(parser, args, argv) if args.autotune_validation else []


def explicit_settings(parser, args, argv) -> list:
    """The settings the command line gave, as opposed to defaults (fastText's `isManual`):
    the same command line parsed again with every default replaced by a marker."""
    unset = object()
    parser.set_defaults(**{name: unset for name in vars(args)})
    return sorted(name for name, value in vars(parser.parse_args(argv)).items() if value is not unset)


def autotune(config, world, args):
    """Search settings instead of training once; rank 0 prints the best and writes --metrics-out."""
    from fasttext_horovod.distributed.autotune import AUTOTUNE_FILE, Autotune
    summary = Autotune(config, world, args.autotune_validation, args.autotune_duration, args.autotune_metric,
                       args.autotune_fixed).run()
    if not world.is_root:  # the summary is rank 0's
        return
    best = summary["best"]
    line = {"best": best["settings"], f"valid_{summary['metric']}": best["score"], "trial": best["trial"],
            "trials": len(summary["trials"])}
    if "test" in summary:
        line.update(accuracy=summary["test"]["accuracy"], n_test=summary["test"]["n_test"])
    results.info(json.dumps(line))
    log.info(f"model: {os.path.join(args.model_dir, 'checkpoint.npz')}; trials: "
             f"{os.path.join(args.model_dir, AUTOTUNE_FILE)}")
    if args.metrics_out:
        from fasttext_horovod.model.checkpoint import write_json_atomic
        write_json_atomic(args.metrics_out, summary)


def main():
    args = parse_args()
    config = build_config(args)
    from fasttext_horovod.distributed.run_guard import claimed_outputs
    with claimed_outputs(config.model_dir, config.cache_dir, config.logdir, args.metrics_out):
        train(args, config)


def train(args, config):
    # Horovod: the ranks of a node share its cores, so each gets its share of MXNet threads.
    configure_mxnet(args.thread or threads_per_rank(), args.gpu)
    from fasttext_horovod.distributed.training import Trainer
    from fasttext_horovod.distributed.world import init_world
    world = init_world()
    if args.autotune_validation:
        return autotune(config, world, args)
    trainer = Trainer(config, world)
    metrics = trainer.train()
    summary = {k: metrics[k] for k in ("accuracy", "precision_at_k", "recall_at_k", "n_test", "epoch")
               if k in metrics}
    if "valid" in metrics:
        summary.update(valid_accuracy=metrics["valid"]["accuracy"], valid_loss=metrics["valid"]["loss"])
    results.info(json.dumps({**summary, "train_seconds": round(metrics["train_seconds"], 3),
                             "examples_per_second": round(metrics["examples_per_second"])}))
    log.info(f"model: {os.path.join(args.model_dir, 'checkpoint.npz')}")
    if args.logdir:
        log.info(f"TensorBoard logs: {args.logdir}  (view: tensorboard --logdir {args.logdir})")
    if args.metrics_out and world.is_root:
        from fasttext_horovod.model.checkpoint import write_json_atomic
        write_json_atomic(args.metrics_out, metrics)


if __name__ == "__main__":
    run_cli(main)
