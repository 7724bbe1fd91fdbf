"""Our model directories to and from fastText's `.bin` files (and from its quantized `.ftz`).

Nothing needs translating in the dictionary: ours is fastText's, word for word, count for
count, id for id. Export materialises the input matrix (the rows training changed, from the
checkpoint; every other row regenerated from the seed) and records our training settings in
fastText's Args. Import stores every input row of the `.bin` as a changed row, so the model
directory does not depend on our seeded initialisation at all.

Continuing training from an imported model works through `train.py --resume` without any
change to the training loop: the imported checkpoint records training progress zero and a
training configuration built from the `.bin`'s Args (plus the `--lr` given to the import),
so a resumed run trains `--epoch` epochs starting from fastText's weights. The training
file must be the one the `.bin` was trained on: `--resume` checks the vocabulary size (an
imported checkpoint has no fingerprint of fastText's training file), not that every word id
matches.

A `.ftz` (see `quantization.py`) reads as its dequantized rows: the input rows fastText
adds up for a document, one per kept word and kept n-gram bucket, under a pruned
dictionary that encodes text into exactly those rows, as fastText's does.
"""
import os

import mxnet as mx
import numpy as np

from fasttext_horovod.data_pipeline.dictionary import Dictionary
from fasttext_horovod.data_pipeline.normalize import LABEL_PREFIX
from fasttext_horovod.model.checkpoint import CheckpointError, check_model_arrays, checkpoint_meta, save_checkpoint
from fasttext_horovod.model.fasttext_binary import FastTextArgs, FastTextModel, read_fasttext_bin
from fasttext_horovod.model.product_quantizer import dense

from .inference import CHECKPOINT_FILE, TEXT_NORMALIZATION, TrainedModel, trained_model_from_arrays


def to_fasttext(trained: TrainedModel) -> FastTextModel:
    """The model as fastText would have saved it after training with our settings."""
    config, dictionary = trained.meta["config"], trained.dictionary
    if dictionary.is_pruned:
        raise CheckpointError(f"{config['model_dir'] or trained.meta.get('imported_from')}: a pruned (quantized) "
                              f"model has no .bin form; quantize.py writes it as a .ftz")
    # fastText's CLI drops the hash buckets of a unigram model; our input matrix has none either.
    bucket = dictionary.bucket if dictionary.word_ngrams > 1 else 0
    args = FastTextArgs(dim=config["dim"], epoch=config["epoch"], min_count=config["min_count"],
                        word_ngrams=dictionary.word_ngrams, loss=config["loss"], bucket=bucket)
    return FastTextModel(args, dictionary.words, dictionary.word_counts, dictionary.labels, dictionary.label_counts,
                         dictionary.ntokens, trained.model.input_matrix.data().asnumpy(),
                         trained.model.output_matrix.data().asnumpy())


def _checkpoint_from_fasttext(path: str, lr: float = 0.1, normalises_input: bool = False):
    """(arrays, meta) of a checkpoint holding the `.bin` at `path`."""
    source = read_fasttext_bin(path)
    unprefixed = [label for label in source.labels if not label.startswith(LABEL_PREFIX)]
    if unprefixed:
        raise CheckpointError(f"{path}: label {unprefixed[0]!r} lacks the {LABEL_PREFIX.decode()} prefix this "
                              f"project reads labels by")
    args = source.args
    dictionary = Dictionary(source.words, source.word_counts, source.labels, source.label_counts, source.ntokens,
                            args.bucket, args.word_ngrams, source.pruneidx)
    # A unigram .bin may still carry (unused) hash buckets; our input matrix stops at the words.
    rows = dense(source.input_matrix)[:dictionary.num_input_rows]
    arrays = {"input_rows": np.arange(len(rows), dtype=np.int64), "input_values": rows,
              "output_matrix": dense(source.output_matrix), **dictionary.to_arrays()}
    # The settings a .bin records; the checkpoint's reader takes the defaults for the rest.
    config = dict(train="", model_dir="", lr=lr, dim=args.dim, epoch=args.epoch, word_ngrams=args.word_ngrams,
                  bucket=args.bucket, min_count=args.min_count, loss=args.loss)
    names = [label[len(LABEL_PREFIX):].decode("utf-8", "replace") for label in source.labels]
    meta = checkpoint_meta(config, progress={}, finished=True, label_names=names, num_classes=None, world_size=1,
                           text_normalization=TEXT_NORMALIZATION if normalises_input else None,
                           imported_from=os.path.abspath(path))
    check_model_arrays(path, arrays, meta)  # what a checkpoint must hold, before one is written from it
    return arrays, meta


def import_fasttext(path: str, model_dir: str, lr: float = 0.1, normalises_input: bool = False) -> str:
    """Convert the `.bin` at `path` into `model_dir/checkpoint.npz`; returns the checkpoint path."""
    arrays, meta = _checkpoint_from_fasttext(path, lr, normalises_input)
    meta["config"]["model_dir"] = os.path.abspath(model_dir)
    checkpoint = os.path.join(model_dir, CHECKPOINT_FILE)
    save_checkpoint(checkpoint, arrays, meta)
    return checkpoint


def load_fasttext_model(path: str, ctx: mx.Context, normalises_input: bool = False) -> TrainedModel:
    """The `.bin` or `.ftz` at `path`, ready to evaluate or predict, without writing a model directory."""
    arrays, meta = _checkpoint_from_fasttext(path, normalises_input=normalises_input)
    return trained_model_from_arrays(arrays, meta, ctx)
