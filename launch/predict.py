"""Predict the top-k labels of each input line, with probabilities, as fastText's `predict-prob`.

    echo "stocks fell sharply on wall street" | python launch/predict.py --model-dir runs/ag --k 2
    python launch/predict.py --model-dir runs/ag --input docs.txt --k 1
    python launch/predict.py --model-dir runs/multi --input docs.txt --k -1 --threshold 0.5   # label sets (ova)
    python launch/predict.py --fasttext-model model.bin --input docs.txt --k 2                # a fastText model

Each output line is `__label__X p [__label__Y p ...]` for the input line at the same position:
the best k labels (-1: all) of probability at least --threshold, best first; an empty line
where none qualifies.
"""
import argparse
import sys

from fasttext_horovod.launch.common import configure_mxnet, run_cli
from fasttext_horovod.launch.model_args import add_model_arguments, add_ranking_arguments, load_trained_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--input", default="-", help="text file, one document per line (default: stdin)")
    add_ranking_arguments(parser)
    parser.add_argument("--gpu", type=int)
    parser.add_argument("--thread", type=int)
    args = parser.parse_args()
    configure_mxnet(args.thread, args.gpu)
    from fasttext_horovod.data_pipeline.readers import read_text_lines
    from fasttext_horovod.distributed.world import World
    from fasttext_horovod.model.inference import encode_texts, predict
    ctx = World().device(args.gpu)
    trained = load_trained_model(args, ctx)
    texts = list(read_text_lines(args.input, normalise=trained.normalises_input))
    ranked = predict(trained.model, encode_texts(texts, trained.dictionary), args.k, ctx, args.threshold)
    labels = trained.dictionary.labels
    out = sys.stdout
    for predictions in ranked:
        out.write(" ".join(f"{labels[label].decode()} {prob:.5f}" for label, prob in predictions) + "\n")


if __name__ == "__main__":
    run_cli(main)
