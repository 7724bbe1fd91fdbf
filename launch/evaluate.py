"""Evaluate a trained model on a labelled file: accuracy, P@k, R@k, per-class scores, confusion.

    python launch/evaluate.py --model-dir runs/ag --test data/test.csv --k 1
    python launch/evaluate.py --fasttext-model model.bin --test data/test.txt   # a fastText .bin
    python launch/evaluate.py --model-dir runs/multi --test multi/test.csv --k -1 --threshold 0.5

P@k and R@k are fastText's `test`: correct predictions over predictions made (the best k,
-1: all, of probability at least --threshold) and over gold labels; the loss is the mean
per-document loss against the gold label sets.
"""
import argparse

from fasttext_horovod.distributed.logs import results
from fasttext_horovod.launch.common import configure_mxnet, run_cli
from fasttext_horovod.launch.model_args import add_model_arguments, add_ranking_arguments, load_trained_model


def format_report(report: dict, names) -> str:
    k = report["k"]
    lines = [f"N\t{report['n_test']}", f"P@{k}\t{report['precision_at_k']:.3f}", f"R@{k}\t{report['recall_at_k']:.3f}",
             f"accuracy\t{report['accuracy']:.4f}", f"loss\t{report['loss']:.4f}", "",
             f"{'class':<20} precision  recall     f1"]
    for name, scores in report["per_class"].items():
        lines.append(f"{name:<20} {scores['precision']:9.4f} {scores['recall']:7.4f} {scores['f1']:6.4f}")
    width = max(8, *(len(n) for n in names)) + 1
    lines += ["", "confusion (rows: gold, columns: predicted)", " " * width + "".join(f"{n[:width - 1]:>{width}}" for n in names)]
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name[:width - 1]:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--test", required=True, help="labelled file in the training file's format")
    add_ranking_arguments(parser)
    parser.add_argument("--gpu", type=int)
    parser.add_argument("--thread", type=int)
    parser.add_argument("--metrics-out", help="also write the report as JSON")
    args = parser.parse_args()
    configure_mxnet(args.thread, args.gpu)
    from fasttext_horovod.distributed.world import World
    from fasttext_horovod.model.checkpoint import write_json_atomic
    from fasttext_horovod.data_pipeline.shards import labelled_file_shard
    from fasttext_horovod.model.inference import evaluate
    ctx = World().device(args.gpu)
    trained = load_trained_model(args, ctx)
    docs = labelled_file_shard(args.test, trained.dictionary, trained.num_classes)
    report = evaluate(trained.model, docs, args.k, ctx, args.threshold).as_dict(trained.label_names)
    results.info(format_report(report, trained.label_names))
    if args.metrics_out:
        write_json_atomic(args.metrics_out, report)


if __name__ == "__main__":
    run_cli(main)
