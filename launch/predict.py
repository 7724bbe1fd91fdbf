"""Predict the top-k labels of each input line, with probabilities, as fastText's `predict-prob`.

    echo "stocks fell sharply on wall street" | python launch/predict.py --model-dir runs/ag --k 2
    python launch/predict.py --model-dir runs/ag --input docs.txt --k 1

Each output line is `__label__X p [__label__Y p ...]` for the input line at the same position.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch.common import configure_mxnet, run_cli  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--input", default="-", help="text file, one document per line (default: stdin)")
    parser.add_argument("--k", type=int, default=1, help="labels per line")
    parser.add_argument("--threshold", type=float, default=0.0, help="drop labels below this probability")
    parser.add_argument("--gpu", type=int)
    parser.add_argument("--thread", type=int)
    args = parser.parse_args()
    if args.k < 1:
        parser.error("--k must be at least 1")
    configure_mxnet(args.thread, args.gpu)
    from data_pipeline.readers import read_text_lines
    from distributed.inference import encode_texts, load_model_dir, predict
    from distributed.world import World
    ctx = World().device(args.gpu)
    trained = load_model_dir(args.model_dir, ctx)
    texts = list(read_text_lines(args.input, normalise=trained.normalises_input))
    ranked = predict(trained.model, encode_texts(texts, trained.dictionary), args.k, ctx, args.threshold)
    labels = trained.dictionary.labels
    out = sys.stdout
    for predictions in ranked:
        out.write(" ".join(f"{labels[label].decode()} {prob:.5f}" for label, prob in predictions) + "\n")


if __name__ == "__main__":
    run_cli(main)
