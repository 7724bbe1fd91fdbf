"""Train a fastText classifier: one process (CPU or --gpu N) or one rank per GPU under horovodrun.

    python launch/train.py --train train.csv --test test.csv --model-dir runs/ag --logdir runs/ag/tb
    horovodrun -np 4 python launch/train.py --dataset yelp_polarity --data-root data --gpu 0 ...
    horovodrun -np 2 python launch/train.py --train train.csv --batch-size 32 ...   (CPU ranks)
    python launch/train.py --train train.csv --autotune-validation valid.csv --autotune-duration 300 ...
"""
import argparse
import json
import os
import sys


from fasttext_horovod.distributed.launcher import launched_size, threads_per_rank
from fasttext_horovod.launch.common import configure_mxnet, run_cli


def parse_args(argv=None):
    from fasttext_horovod.data_pipeline.datasets import DATASETS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--train", help="training file: Zhang et al. CSV (*.csv) or fastText __label__ lines")
    data.add_argument("--test", help="test file, evaluated after every epoch")
    held_out = data.add_mutually_exclusive_group()
    held_out.add_argument("--valid", help="validation file, evaluated after every epoch (accuracy, loss)")
    held_out.add_argument("--valid-fraction", type=float, default=0.0, metavar="F",
                          help="hold out this share of --train (drawn with --seed) as the validation set")
    data.add_argument("--dataset", choices=sorted(DATASETS), help="a paper dataset under --data-root; sets --lr")
    data.add_argument("--data-root", default="data", help="where `download.py` put the datasets")
    data.add_argument("--cache-dir", default=".fasttext_cache", help="preprocessed shards, reused across runs")
    data.add_argument("--num-shards", type=int, default=8, help="shards per corpus (>= number of ranks)")
    out = parser.add_argument_group("output")
    out.add_argument("--model-dir", required=True, help="checkpoint and final model go here")
    out.add_argument("--logdir", help="TensorBoard event directory")
    out.add_argument("--metrics-out", help="write final metrics here as JSON")
    out.add_argument("--resume", action="store_true", help="continue from the checkpoint in --model-dir")
    out.add_argument("--early-stopping", action="store_true",
                     help="stop when validation accuracy has not improved for --patience epochs; keep the best model")
    out.add_argument("--patience", type=int, default=2, help="epochs without improvement before early stopping")
    ft = parser.add_argument_group("fastText settings")
    ft.add_argument("--lr", type=float, help="learning rate (default 0.1, or the dataset's)")
    ft.add_argument("--dim", type=int, default=100, help="size of word vectors")
    ft.add_argument("--epoch", type=int, default=5)
    ft.add_argument("--word-ngrams", type=int, default=1, help="max length of word n-grams")
    ft.add_argument("--bucket", type=int, default=2_000_000, help="hash buckets for word n-grams")
    ft.add_argument("--min-count", type=int, default=1, help="minimal number of word occurrences")
    ft.add_argument("--min-count-label", type=int, default=1, help="minimal number of label occurrences")
    ft.add_argument("--loss", choices=("softmax", "hs", "ova"), default="softmax",
                    help="ova: one-vs-all, an independent sigmoid per label (multi-label data)")
    ft.add_argument("--pretrained-vectors", metavar="FILE.vec",
                    help="initialise word rows from a .vec text file (fastText/word2vec) of the same --dim")
    ft.add_argument("--thread", type=int,
                    help="CPU threads for MXNet operators (under Horovod: the node's cores / its ranks)")
    ft.add_argument("--k", type=int, default=1, help="k of precision/recall@k in evaluation")
    run = parser.add_argument_group("mini-batches and devices")
    run.add_argument("--batch-size", type=int,
                     help="documents per step per rank (default 64, fewer where lr x ranks x 64 > 16: "
                          "a step applies the summed gradients, and past that SGD diverges)")
    run.add_argument("--optimizer", choices=("auto", "sgd", "adagrad"), default="auto",
                     help="sgd: fastText's (summed gradients, per-example lr); adagrad: row-wise Adagrad with "
                          "warm-up, for large global batches; auto (default): sgd up to 64 documents per step "
                          "(all ranks), adagrad above. The default --lr follows the rule: 0.1 for sgd, 1 for adagrad")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--gpu", type=int, help="GPU index for one process (under Horovod: local rank)")
    run.add_argument("--fp16-allreduce", action="store_true", help="exchange gradients in float16")
    run.add_argument("--baseline-rate", type=float, metavar="EXAMPLES_PER_S",
                     help="one worker's measured examples/s (bench/scaling.py at np=1) for scaling/efficiency; "
                          "default under Horovod: rank 0 measures it before training")
    run.add_argument("--log-every", type=int, default=50, help="steps between loss/throughput logs")
    tune = parser.add_argument_group("autotune (fastText's): search lr, dim, epoch, word n-grams, bucket, loss; "
                                     "settings given explicitly are not searched")
    tune.add_argument("--autotune-validation", metavar="FILE",
                      help="search settings that score best on this labelled file; keep the best model")
    tune.add_argument("--autotune-duration", type=float, default=300.0, metavar="SECONDS",
                      help="time budget of the search (300)")
    tune.add_argument("--autotune-metric", choices=("f1", "accuracy"), default="f1",
                      help="validation score to maximise: f1 of P@k and R@k (fastText's), or accuracy")
    args = parser.parse_args(argv)
    check_autotune_args(parser, args, argv)
    dataset_lr = None
    if args.dataset:
        spec = DATASETS[args.dataset]
        args.train = args.train or spec.train_path(args.data_root)
        args.test = args.test or spec.test_path(args.data_root)
        dataset_lr = spec.lr
    if not args.train:
        parser.error("give --train FILE or --dataset NAME")
    from fasttext_horovod.model.step_size import DEFAULT_LR, default_batch_size, default_lr
    if args.batch_size is None:
        args.batch_size = default_batch_size(args.lr or dataset_lr or DEFAULT_LR["sgd"], launched_size())
    if args.lr is None:
        args.lr = default_lr(args.optimizer, args.batch_size * launched_size(), dataset_lr)
    for name in ("dim", "epoch", "word_ngrams", "bucket", "batch_size", "num_shards", "k", "log_every", "patience"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0:
        parser.error("--lr must be positive")
    if not 0.0 <= args.valid_fraction < 1.0:
        parser.error("--valid-fraction must be in [0, 1)")
    if args.early_stopping and not (args.valid or args.valid_fraction):
        parser.error("--early-stopping needs a validation set: give --valid FILE or --valid-fraction F")
    if args.baseline_rate is not None and args.baseline_rate <= 0:
        parser.error("--baseline-rate must be positive")
    if args.num_shards < launched_size():
        parser.error(f"--num-shards {args.num_shards} cannot feed {launched_size()} ranks: give at least one per rank")
    return args


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
    if not world.is_root:
        return
    best = summary["best"]
    line = {"best": best["settings"], f"valid_{summary['metric']}": best["score"], "trial": best["trial"],
            "trials": len(summary["trials"])}
    if "test" in summary:
        line.update(accuracy=summary["test"]["accuracy"], n_test=summary["test"]["n_test"])
    print(json.dumps(line))
    print(f"model: {os.path.join(args.model_dir, 'checkpoint.npz')}; trials: "
          f"{os.path.join(args.model_dir, AUTOTUNE_FILE)}", file=sys.stderr)
    if args.metrics_out:
        from fasttext_horovod.model.checkpoint import write_json_atomic
        write_json_atomic(args.metrics_out, summary)


def main():
    args = parse_args()
    # Horovod: the ranks of a node share its cores, so each gets its share of MXNet threads.
    configure_mxnet(args.thread or threads_per_rank(), args.gpu)
    from fasttext_horovod.distributed.training import TrainConfig, Trainer
    from fasttext_horovod.distributed.world import init_world
    world = init_world()
    settings = {k: v for k, v in vars(args).items()
                if k not in ("data_root", "metrics_out", "thread") and not k.startswith("autotune_")}
    if args.autotune_validation:
        return autotune(TrainConfig(**settings), world, args)
    trainer = Trainer(TrainConfig(**settings), world)
    metrics = trainer.train()
    if world.is_root:
        summary = {k: metrics[k] for k in ("accuracy", "precision_at_k", "recall_at_k", "n_test", "epoch")
                   if k in metrics}
        if "valid" in metrics:
            summary.update(valid_accuracy=metrics["valid"]["accuracy"], valid_loss=metrics["valid"]["loss"])
        print(json.dumps({**summary, "train_seconds": round(metrics["train_seconds"], 3),
                          "examples_per_second": round(metrics["examples_per_second"])}))
        print(f"model: {os.path.join(args.model_dir, 'checkpoint.npz')}", file=sys.stderr)
        if args.logdir:
            print(f"TensorBoard logs: {args.logdir}  (view: tensorboard --logdir {args.logdir})", file=sys.stderr)
        if args.metrics_out:
            from fasttext_horovod.model.checkpoint import write_json_atomic
            write_json_atomic(args.metrics_out, metrics)


if __name__ == "__main__":
    run_cli(main)
