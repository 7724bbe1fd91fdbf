"""Export a trained model to fastText's formats: a `.bin` that `fasttext.load_model` reads, and `.vec`.

    python launch/export.py --model-dir runs/ag --fasttext runs/ag/model.bin --vec runs/ag/model.vec

fastText's `predict` does not normalise text: a model trained on Zhang et al.'s CSVs expects
text normalised as fastText's classification-results.sh does (as our predict.py does for you).
"""
import argparse

from fasttext_horovod.distributed.logs import log, results
from fasttext_horovod.launch.common import configure_mxnet, run_cli


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--fasttext", metavar="MODEL.bin", help="write fastText's binary model here")
    parser.add_argument("--vec", metavar="MODEL.vec", help="write the word vectors in fastText's .vec text format")
    args = parser.parse_args()
    if not (args.fasttext or args.vec):
        parser.error("give --fasttext MODEL.bin and/or --vec MODEL.vec")
    configure_mxnet(None, None)
    from fasttext_horovod.distributed.world import World
    from fasttext_horovod.model.fasttext_binary import write_fasttext_bin, write_vec
    from fasttext_horovod.model.fasttext_interop import to_fasttext
    from fasttext_horovod.model.inference import load_model_dir
    trained = load_model_dir(args.model_dir, World().device(None))
    exported = to_fasttext(trained)
    if args.fasttext:
        write_fasttext_bin(args.fasttext, exported)
        results.info(f"fastText model: {args.fasttext}")
    if args.vec:
        write_vec(args.vec, exported.words, exported.input_matrix[:len(exported.words)])
        results.info(f"word vectors: {args.vec}")
    if trained.normalises_input:
        log.info("note: trained on normalised CSV text; normalise text before fastText's predict")


if __name__ == "__main__":
    run_cli(main)
