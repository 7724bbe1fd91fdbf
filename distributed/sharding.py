"""Which corpus and which shards each rank reads.

Preprocessing happens once per filesystem. Rank 0 builds the sharded corpus in
--cache-dir (or finds it there: the directory is named by a hash of the training file and
the settings) and tells the others its name. On a node where that directory is not
visible (--cache-dir on node-local disk) the node's local rank 0 builds its own copy from
the same file, which must come out under the same name; on a shared filesystem nobody
builds twice. Every rank then opens the same dictionary and label map.

Rank r owns shards r, r + size, r + 2*size, ...: it opens only those, so the memory a rank
maps falls as ranks are added, and checks them before training, because MXNet's `take`
clips an out-of-range row id silently instead of failing. Batches are composed per shard
(see `BatchStream`), so all ranks run the same number of steps whatever their share.
"""
import os
import zipfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.data_pipeline.shards import CorpusSettings, Shard, ShardedCorpus, preprocess

from .progress import ProgressReporter
from .world import World

_NAME_BYTES = 64  # room for a corpus directory name in a fixed-size broadcast


def prepare_corpus(train_path: str, settings: CorpusSettings, cache_dir: str, num_classes: Optional[int],
                   world: World, extra_words: Optional[Sequence[bytes]] = None) -> ShardedCorpus:
    """The preprocessed corpus, the same on every rank (see the module docstring)."""
    name = np.zeros(_NAME_BYTES, dtype=np.uint8)
    corpus = None
    if world.is_root:
        reporter = ProgressReporter(None, "docs preprocessed")
        corpus = preprocess(train_path, settings, cache_dir, num_classes,
                            lambda docs, nbytes: reporter.update(docs, nbytes=nbytes), extra_words)
        reporter.close()
        encoded = os.path.basename(corpus.directory).encode()
        name[:len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    directory = os.path.join(cache_dir, world.broadcast(name, name="corpus_name").tobytes().rstrip(b"\0").decode())
    if world.local_rank == 0 and not os.path.isfile(os.path.join(directory, "meta.json")):
        corpus = preprocess(train_path, settings, cache_dir, num_classes, extra_words=extra_words)
        if corpus.directory != directory:
            raise InputError(train_path, f"this node's copy differs from rank 0's (corpus {corpus.directory} "
                                         f"vs {directory}): give every node the same file")
    world.barrier()  # the node's copy is complete before its other ranks open it
    return corpus or ShardedCorpus(directory)


def owned_shards(num_shards: int, world: World) -> List[int]:
    return list(range(world.rank, num_shards, world.size))


def check_shard(corpus: ShardedCorpus, k: int) -> Shard:
    """Shard `k` opened and checked against the corpus; a damaged one is an `InputError`."""
    def damaged(problem: str):
        return InputError(corpus.directory, f"shard {k} is damaged ({problem}); delete this directory "
                                            "and run again to rebuild it")
    try:
        shard = corpus.shard(k)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise damaged(f"unreadable: {err}") from None
    dictionary = corpus.dictionary
    if shard.num_docs != corpus.docs_per_shard[k]:
        raise damaged(f"{shard.num_docs} documents, the corpus says {corpus.docs_per_shard[k]}")
    for what, offsets, values in (("row", shard.offsets, shard.ids), ("label", shard.label_offsets, shard.label_ids)):
        if len(offsets) != shard.num_docs + 1 or offsets[0] != 0 or offsets[-1] != len(values) \
                or np.any(np.diff(offsets) < 0):
            raise damaged(f"inconsistent {what} offsets")
    if len(shard.num_tokens) != shard.num_docs:
        raise damaged("token counts do not match the documents")
    if len(shard.ids) and not 0 <= shard.ids.min() <= shard.ids.max() < dictionary.num_input_rows:
        raise damaged(f"input rows outside 0..{dictionary.num_input_rows - 1}")
    if len(shard.label_ids) and not 0 <= shard.label_ids.min() <= shard.label_ids.max() < dictionary.nlabels:
        raise damaged(f"label ids outside 0..{dictionary.nlabels - 1}")
    shard.release_pages()  # the check read every page
    return shard


def open_rank_shards(corpus: ShardedCorpus, world: World) -> Dict[int, Shard]:
    return {k: check_shard(corpus, k) for k in owned_shards(corpus.num_shards, world)}
