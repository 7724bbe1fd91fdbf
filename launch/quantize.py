"""Make a small model as fastText's `quantize` does: a `.ftz` that `fasttext.load_model` reads.

    python launch/quantize.py --model-dir runs/ag --output runs/ag/model.ftz --cutoff 100000 \\
        --retrain --train data/train.csv --qnorm --test data/test.csv
    python launch/evaluate.py --fasttext-model runs/ag/model.ftz --test data/test.csv

--cutoff keeps the input rows (words and word n-grams) of largest norm and prunes the
dictionary to them; --retrain then trains the kept rows and the output matrix again on
--train, the model's own training file, for --epoch epochs (the model's) at --lr (0.05, as
fastText's quantize; the training lr is too high for weights already trained). The input
matrix is product-quantized: one byte per --dsub columns, and with --qnorm each row's norm
quantized apart; --qout quantizes the output matrix too (it needs 256 labels or more).
It prints the size of the full model (its .bin, as export.py writes it) and of the .ftz, and
with --test both accuracies. fastText's predict does not normalise text: give it text
normalised as the training corpus was (predict.py does this for CSV-trained models).
"""
import argparse
import os

from fasttext_horovod.distributed.logs import log, results
from fasttext_horovod.launch.common import configure_mxnet, run_cli


def check_settings(args) -> None:
    """Refuse settings fastText would refuse or ignore, before anything is loaded or written."""
    from fasttext_horovod.data_pipeline.errors import InputError
    from fasttext_horovod.data_pipeline.readers import check_readable_file
    from fasttext_horovod.model.product_quantizer import KSUB
    if args.cutoff is not None and args.cutoff < KSUB:
        raise InputError("--cutoff", f"must be at least {KSUB} rows (the quantizer's {KSUB} centroids need "
                                     f"as many), got {args.cutoff}")
    if args.dsub < 1:
        raise InputError("--dsub", f"must be at least 1 column per code, got {args.dsub}")
    if args.retrain and not args.train:
        raise InputError("--retrain", "needs --train, the file the model was trained on")
    if args.retrain and args.cutoff is None:
        raise InputError("--retrain", "needs --cutoff: fastText retrains only a pruned model")
    retrain_only = [flag for flag, value in (("--train", args.train), ("--epoch", args.epoch), ("--lr", args.lr),
                                             ("--cache-dir", args.cache_dir)) if value is not None]
    if retrain_only and not args.retrain:
        raise InputError(retrain_only[0], "is used only with --retrain")
    if args.epoch is not None and args.epoch < 1:
        raise InputError("--epoch", f"must be at least 1, got {args.epoch}")
    if args.lr is not None and not args.lr > 0:
        raise InputError("--lr", f"must be positive, got {args.lr}")
    for path in (args.output, args.metrics_out):
        if path and os.path.isdir(path):
            raise InputError(path, "is a directory, expected a file to write")
    for path in (args.train, args.test):
        if path:
            check_readable_file(path)


def format_summary(summary: dict, output: str) -> str:
    lines = [f"fastText model (.bin): {summary['bin_bytes']:>12,} bytes, {summary['input_rows_before']:,} input rows",
             f"quantized ({output}): {summary['ftz_bytes']:>12,} bytes, {summary['input_rows_after']:,} input rows, "
             f"{summary['size_ratio']:.1f}x smaller"]
    if "n_test" in summary:
        lines.append(f"accuracy on {summary['n_test']} documents: {summary['accuracy_before']:.4f} before, "
                     f"{summary['accuracy_after']:.4f} after ({-summary['accuracy_drop_points']:+.2f} points)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--output", required=True, metavar="MODEL.ftz", help="the quantized model to write")
    parser.add_argument("--cutoff", type=int, help="keep this many input rows, those of largest norm (default: all)")
    parser.add_argument("--dsub", type=int, default=2, help="input columns per byte of code (2)")
    parser.add_argument("--qnorm", action="store_true", help="quantize each row's norm separately")
    parser.add_argument("--qout", action="store_true", help="quantize the output matrix too (256+ labels)")
    parser.add_argument("--retrain", action="store_true", help="train the kept rows again after --cutoff")
    parser.add_argument("--train", help="with --retrain: the model's training file")
    parser.add_argument("--epoch", type=int, help="with --retrain: epochs (default: the model's)")
    parser.add_argument("--lr", type=float, help="with --retrain: learning rate (default: 0.05, fastText's)")
    parser.add_argument("--cache-dir", help="with --retrain: preprocessed shards (default: the model's)")
    parser.add_argument("--test", help="labelled file: report accuracy before and after")
    parser.add_argument("--metrics-out", help="also write the sizes and accuracies as JSON")
    parser.add_argument("--logdir", help="TensorBoard: the retraining's curves (retrain/) and the sizes and "
                                         "accuracies before and after (quantize/)")
    parser.add_argument("--gpu", type=int)
    parser.add_argument("--thread", type=int)
    args = parser.parse_args()
    check_settings(args)
    configure_mxnet(args.thread, args.gpu)
    from fasttext_horovod.distributed.quantize_retrain import log_summary, quantize_model, retrain_config
    from fasttext_horovod.distributed.world import init_world
    from fasttext_horovod.model.checkpoint import write_json_atomic
    from fasttext_horovod.model.fasttext_binary import write_fasttext_bin
    from fasttext_horovod.model.fasttext_interop import load_fasttext_model
    from fasttext_horovod.model.inference import load_model_dir
    from fasttext_horovod.model.quantization import QuantizeSettings, summarize, top1_report
    # Horovod: every rank retrains; rank 0 alone quantizes, writes and reports.
    world = init_world()
    ctx = world.device(args.gpu)
    trained = load_model_dir(args.model_dir, ctx)
    # The test file is read before anything is written, so a bad one leaves no .ftz behind.
    before = top1_report(trained, args.test, trained.num_classes, ctx) if args.test and world.is_root else None
    retrain = None
    if args.retrain:
        overrides = {"gpu": args.gpu, **({"cache_dir": args.cache_dir} if args.cache_dir else {}),
                     **({"logdir": os.path.join(args.logdir, "retrain")} if args.logdir else {})}
        retrain = retrain_config(trained.meta["config"], args.train, args.epoch, args.lr, **overrides)
    settings = QuantizeSettings(args.cutoff or 0, args.dsub, args.qnorm, args.qout)
    quantized = quantize_model(trained, settings, retrain, world, args.model_dir)
    if not world.is_root:
        return
    write_fasttext_bin(args.output, quantized.small)
    after = None
    if args.test:
        small = load_fasttext_model(args.output, ctx, trained.normalises_input)
        after = top1_report(small, args.test, trained.num_classes, ctx)
    summary = {**summarize(quantized, args.output, before, after), "cutoff": settings.cutoff, "dsub": args.dsub,
               "qnorm": args.qnorm, "qout": args.qout, "retrain": args.retrain}
    results.info(format_summary(summary, args.output))
    if args.logdir:
        log_summary(os.path.join(args.logdir, "quantize"), summary)
    if args.metrics_out:
        write_json_atomic(args.metrics_out, summary)
    if trained.normalises_input:
        log.info("note: trained on normalised CSV text; normalise text before fastText's predict")


if __name__ == "__main__":
    run_cli(main)
