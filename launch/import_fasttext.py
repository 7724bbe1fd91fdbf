"""Convert a fastText `.bin` classifier into a model directory that evaluate.py, predict.py,
export.py and `train.py --resume` use like one of ours.

    python launch/import_fasttext.py --fasttext-model model.bin --model-dir runs/imported
    python launch/evaluate.py --model-dir runs/imported --test test.txt
    python launch/train.py --train train.txt --model-dir runs/imported --resume --lr 0.1 --dim D ...

Supervised, unquantised models without character n-grams (fastText's classifier defaults),
softmax or hs loss. `--resume` trains --epoch more epochs from fastText's weights; its
settings must equal the imported ones (dim, epoch, wordNgrams, bucket, minCount, loss from
the .bin; --lr as given here) and its training file must be the one the .bin was trained on.
"""
import argparse
import os

from fasttext_horovod.distributed.logs import results
from fasttext_horovod.launch.common import configure_mxnet, run_cli


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasttext-model", required=True, metavar="MODEL.bin")
    parser.add_argument("--model-dir", required=True, help="new model directory (must not hold a checkpoint)")
    parser.add_argument("--lr", type=float, default=0.1,
                        help="learning rate a --resume run continues with (the .bin does not store it)")
    parser.add_argument("--normalize-input", action="store_true",
                        help="the .bin was trained on text normalised like classification-results.sh: "
                             "predict.py normalises raw input the same way")
    args = parser.parse_args()
    configure_mxnet(None, None)
    from fasttext_horovod.data_pipeline.errors import InputError
    from fasttext_horovod.model.fasttext_interop import import_fasttext
    from fasttext_horovod.model.inference import CHECKPOINT_FILE
    existing = os.path.join(args.model_dir, CHECKPOINT_FILE)
    if os.path.exists(existing):
        raise InputError(existing, "exists; import into a new --model-dir")
    results.info(f"model: {import_fasttext(args.fasttext_model, args.model_dir, args.lr, args.normalize_input)}")


if __name__ == "__main__":
    run_cli(main)
