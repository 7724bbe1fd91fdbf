"""Who am I in the job: rank, size, local rank and device, in one place.

A process not started by `horovodrun`/`mpirun` is a world of one and never imports
Horovod, so the single-process path is the distributed path with size 1.
"""
import os
from dataclasses import dataclass
from typing import Optional

import mxnet as mx

# Set by horovodrun (Gloo or MPI) and by Open MPI / MPICH launchers respectively.
_LAUNCHER_SIZE_VARS = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    hvd: Optional[object] = None  # the horovod.mxnet module when launched under Horovod

    @property
    def is_root(self) -> bool:
        """Only the root rank logs, writes checkpoints, events and metrics."""
        return self.rank == 0

    def device(self, gpu: Optional[int]) -> mx.Context:
        """CPU without --gpu; one GPU per rank under Horovod; GPU `gpu` for a single process."""
        if gpu is None:
            return mx.cpu()
        return mx.gpu(self.local_rank if self.size > 1 else gpu)


def launched_by_horovod() -> bool:
    return any(int(os.environ.get(var, "1")) > 1 for var in _LAUNCHER_SIZE_VARS)


def init_world() -> World:
    if not launched_by_horovod():
        return World()
    # Horovod: initialise once; rank/size come from the launcher.
    import horovod.mxnet as hvd
    hvd.init()
    return World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd)
