"""Train a fastText classifier: one process (CPU or --gpu N) or one rank per GPU under horovodrun.

    python launch/train.py --train train.csv --test test.csv --model-dir runs/ag --logdir runs/ag/tb
    horovodrun -np 4 python launch/train.py --dataset yelp_polarity --data-root data --gpu 0 ...
    horovodrun -np 2 python launch/train.py --train train.csv --batch-size 32 ...   (CPU ranks)
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distributed.launcher import launched_size, threads_per_rank  # noqa: E402
from launch.common import configure_mxnet, run_cli  # noqa: E402


def parse_args(argv=None):
    from data_pipeline.datasets import DATASETS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--train", help="training file: Zhang et al. CSV (*.csv) or fastText __label__ lines")
    data.add_argument("--test", help="test file, evaluated after every epoch")
    data.add_argument("--dataset", choices=sorted(DATASETS), help="a paper dataset under --data-root; sets --lr")
    data.add_argument("--data-root", default="data", help="where `download.py` put the datasets")
    data.add_argument("--cache-dir", default=".fasttext_cache", help="preprocessed shards, reused across runs")
    data.add_argument("--num-shards", type=int, default=8, help="shards per corpus (>= number of ranks)")
    out = parser.add_argument_group("output")
    out.add_argument("--model-dir", required=True, help="checkpoint and final model go here")
    out.add_argument("--logdir", help="TensorBoard event directory")
    out.add_argument("--metrics-out", help="write final metrics here as JSON")
    out.add_argument("--resume", action="store_true", help="continue from the checkpoint in --model-dir")
    ft = parser.add_argument_group("fastText settings")
    ft.add_argument("--lr", type=float, help="learning rate (default 0.1, or the dataset's)")
    ft.add_argument("--dim", type=int, default=100, help="size of word vectors")
    ft.add_argument("--epoch", type=int, default=5)
    ft.add_argument("--word-ngrams", type=int, default=1, help="max length of word n-grams")
    ft.add_argument("--bucket", type=int, default=2_000_000, help="hash buckets for word n-grams")
    ft.add_argument("--min-count", type=int, default=1, help="minimal number of word occurrences")
    ft.add_argument("--min-count-label", type=int, default=1, help="minimal number of label occurrences")
    ft.add_argument("--loss", choices=("softmax", "hs"), default="softmax")
    ft.add_argument("--thread", type=int,
                    help="CPU threads for MXNet operators (under Horovod: the node's cores / its ranks)")
    ft.add_argument("--k", type=int, default=1, help="k of precision/recall@k in evaluation")
    run = parser.add_argument_group("mini-batches and devices")
    run.add_argument("--batch-size", type=int, default=64, help="documents per step per rank")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--gpu", type=int, help="GPU index for one process (under Horovod: local rank)")
    run.add_argument("--fp16-allreduce", action="store_true", help="exchange gradients in float16")
    run.add_argument("--baseline-rate", type=float, metavar="EXAMPLES_PER_S",
                     help="one worker's measured examples/s (bench/scaling.py at np=1) for scaling/efficiency; "
                          "default under Horovod: rank 0 measures it before training")
    run.add_argument("--log-every", type=int, default=50, help="steps between loss/throughput logs")
    args = parser.parse_args(argv)
    if args.dataset:
        spec = DATASETS[args.dataset]
        args.train = args.train or spec.train_path(args.data_root)
        args.test = args.test or spec.test_path(args.data_root)
        args.lr = args.lr if args.lr is not None else spec.lr
    if not args.train:
        parser.error("give --train FILE or --dataset NAME")
    args.lr = 0.1 if args.lr is None else args.lr
    for name in ("dim", "epoch", "word_ngrams", "bucket", "batch_size", "num_shards", "k", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0:
        parser.error("--lr must be positive")
    if args.baseline_rate is not None and args.baseline_rate <= 0:
        parser.error("--baseline-rate must be positive")
    if args.num_shards < launched_size():
        parser.error(f"--num-shards {args.num_shards} cannot feed {launched_size()} ranks: give at least one per rank")
    return args


def main():
    args = parse_args()
    # Horovod: the ranks of a node share its cores, so each gets its share of MXNet threads.
    configure_mxnet(args.thread or threads_per_rank(), args.gpu)
    from distributed.training import TrainConfig, Trainer
    from distributed.world import init_world
    world = init_world()
    settings = {k: v for k, v in vars(args).items() if k not in ("data_root", "metrics_out", "thread")}
    trainer = Trainer(TrainConfig(**settings), world)
    metrics = trainer.train()
    if world.is_root:
        summary = {k: metrics[k] for k in ("accuracy", "precision_at_k", "recall_at_k", "n_test") if k in metrics}
        print(json.dumps({**summary, "train_seconds": round(metrics["train_seconds"], 3),
                          "examples_per_second": round(metrics["examples_per_second"])}))
        print(f"model: {os.path.join(args.model_dir, 'checkpoint.npz')}", file=sys.stderr)
        if args.logdir:
            print(f"TensorBoard logs: {args.logdir}  (view: tensorboard --logdir {args.logdir})", file=sys.stderr)
        if args.metrics_out:
            from model.checkpoint import write_json_atomic
            write_json_atomic(args.metrics_out, metrics)


if __name__ == "__main__":
    run_cli(main)
