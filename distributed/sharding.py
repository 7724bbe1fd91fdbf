"""Which shards each rank reads.

Rank r owns shards r, r + size, r + 2*size, ...: it opens only those, so the memory a rank
maps falls as ranks are added. Batches are composed per shard (see `BatchStream`), so all
ranks run the same number of steps whatever their share of documents.
"""
from typing import Dict, List

from data_pipeline.shards import Shard, ShardedCorpus

from .world import World


def owned_shards(num_shards: int, world: World) -> List[int]:
    if num_shards < world.size:
        raise ValueError(f"{num_shards} shards cannot feed {world.size} ranks: use --num-shards >= {world.size}")
    return list(range(world.rank, num_shards, world.size))


def open_rank_shards(corpus: ShardedCorpus, world: World) -> Dict[int, Shard]:
    return {s: corpus.shard(s) for s in owned_shards(corpus.num_shards, world)}
