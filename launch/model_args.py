"""Options `evaluate.py` and `predict.py` share: which model to load, how many labels to return.

Nothing here imports MXNet, so parsing stays ahead of `configure_mxnet`.
"""
import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model-dir (ours) or --fasttext-model (fastText's own file), exactly one."""
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-dir", help="a model directory written by train.py")
    model.add_argument("--fasttext-model", metavar="MODEL.bin",
                       help="a supervised fastText model (.bin, or a quantized .ftz)")
    parser.add_argument("--normalize-input", action="store_true",
                        help="with --fasttext-model: it was trained on CSVs normalised as fastText's "
                             "classification-results.sh does (as train.py does), so normalise raw text alike")


def label_count(text: str) -> int:
    """--k: a positive number of labels, or -1 for every label, as fastText's `predict`."""
    k = int(text)
    if k < 1 and k != -1:
        raise argparse.ArgumentTypeError(f"{k}: must be at least 1, or -1 for every label")
    return k


def add_ranking_arguments(parser: argparse.ArgumentParser) -> None:
    """--k and --threshold, fastText's names and defaults (1 and 0.0)."""
    parser.add_argument("--k", type=label_count, default=1, help="labels per document; -1: every label")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="only labels of at least this probability (with ova, e.g. --k -1 --threshold 0.5)")


def load_trained_model(args: argparse.Namespace, ctx):
    """The model `add_model_arguments` named, on `ctx` (call after `configure_mxnet`)."""
    if args.fasttext_model:
        from fasttext_horovod.model.fasttext_interop import load_fasttext_model
        return load_fasttext_model(args.fasttext_model, ctx, args.normalize_input)
    from fasttext_horovod.model.inference import load_model_dir
    return load_model_dir(args.model_dir, ctx)
