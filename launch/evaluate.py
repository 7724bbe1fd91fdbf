"""Evaluate a trained model on a labelled file: accuracy, P@k, R@k, per-class scores, confusion.

    python launch/evaluate.py --model-dir runs/ag --test data/test.csv --k 1
    python launch/evaluate.py --fasttext-model model.bin --test data/test.txt   # a fastText .bin
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch.common import configure_mxnet, run_cli  # noqa: E402


def format_report(report: dict, names) -> str:
    k = report["k"]
    lines = [f"N\t{report['n_test']}", f"P@{k}\t{report['precision_at_k']:.3f}", f"R@{k}\t{report['recall_at_k']:.3f}",
             f"accuracy\t{report['accuracy']:.4f}", "", f"{'class':<20} precision  recall     f1"]
    for name, scores in report["per_class"].items():
        lines.append(f"{name:<20} {scores['precision']:9.4f} {scores['recall']:7.4f} {scores['f1']:6.4f}")
    width = max(8, *(len(n) for n in names)) + 1
    lines += ["", "confusion (rows: gold, columns: predicted)", " " * width + "".join(f"{n[:width - 1]:>{width}}" for n in names)]
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name[:width - 1]:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-dir")
    model.add_argument("--fasttext-model", metavar="MODEL.bin", help="a supervised fastText .bin model")
    parser.add_argument("--test", required=True, help="labelled file in the training file's format")
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--gpu", type=int)
    parser.add_argument("--thread", type=int)
    parser.add_argument("--metrics-out", help="also write the report as JSON")
    args = parser.parse_args()
    if args.k < 1:
        parser.error("--k must be at least 1")
    configure_mxnet(args.thread, args.gpu)
    from distributed.inference import encode_labelled_file, evaluate, load_model_dir
    from distributed.world import World
    from model.checkpoint import write_json_atomic
    ctx = World().device(args.gpu)
    if args.fasttext_model:
        from distributed.fasttext_interop import load_fasttext_model
        trained = load_fasttext_model(args.fasttext_model, ctx)
    else:
        trained = load_model_dir(args.model_dir, ctx)
    docs = encode_labelled_file(args.test, trained.dictionary, trained.num_classes)
    report = evaluate(trained.model, docs, args.k, ctx).as_dict(trained.label_names)
    print(format_report(report, trained.label_names))
    if args.metrics_out:
        write_json_atomic(args.metrics_out, report)


if __name__ == "__main__":
    run_cli(main)
