"""Who am I in the job, and the few collectives the rest of the code uses.

Initialisation happens here and only here: rank, size, local rank and device. A process
not started by `horovodrun`/`mpirun` is a world of one and never imports Horovod, so the
single-process path is the distributed path with size 1, whose collectives are identities.

Collectives take and return numpy arrays, and leave the caller's arrays as they were.

If another rank dies or raises, Horovod shuts down and every collective still pending
fails; that surfaces here as `PeerFailure`, so a surviving rank stops with one line
instead of a traceback, a hang, or training on with garbage. The last is a real risk:
under MXNet's NaiveEngine (our CPU engine) a failed Horovod op raises nothing and leaves
its output as Horovod's 1-element placeholder. So every collective here is an all-gather
to which each rank gives at least one row, and a result shorter than one row per rank is
taken for what it is (broadcasts are all-gathers too, for that reason: they carry a few
bytes). Only `broadcast_parameters` uses Horovod's broadcast; the next collective checks it.

The one big collective, a step's gradient messages (`allgather_bytes`), moves its bytes
through MPI directly when Horovod runs on MPI: Horovod's all-gather of 3.8 MB takes 12 ms
here, MPI's 3.5 (at 0.2 MB, 2.5 ms against 0.09). A raw MPI collective would not learn that
a peer stopped (it would wait until the launcher tears the job down, and no rank would say
why), so the message lengths it needs go first through a Horovod all-gather: once that
returns, every rank has reached this same collective, and between the two there is only
this function's own code, so a rank can still die (mpirun then names it) but not stop.
"""
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import mxnet as mx
import numpy as np

from fasttext_horovod.data_pipeline.errors import InputError
from fasttext_horovod.model.tensors import to_device

from .errors import PeerFailure
from .launcher import launched_size


@contextmanager
def _peer_failures():
    """Horovod's error from a failed collective (raised under MXNet's threaded engines) as PeerFailure."""
    try:
        yield
    except mx.base.MXNetError as err:
        raise PeerFailure(str(err).strip().splitlines()[0].replace("MXNetError: ", "")) from None


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    hvd: Optional[object] = None  # the horovod.mxnet module when launched under Horovod
    mpi: Optional[object] = None  # an mpi4py communicator of the ranks when Horovod runs on MPI

    @property
    def is_root(self) -> bool:
        """Only the root rank logs, writes checkpoints, events and metrics."""
        return self.rank == 0

    def device(self, gpu: Optional[int]) -> mx.Context:
        """CPU without --gpu; GPU `local rank` under Horovod; GPU `gpu` for a single process."""
        if gpu is None:
            return mx.cpu()
        index = self.local_rank if self.size > 1 else gpu
        visible = mx.context.num_gpus()
        if index >= visible:
            raise InputError("--gpu", f"GPU {index} is not available: this MXNet sees {visible} GPU(s)"
                                      + ("; the CPU build cannot use one (install mxnet-cu112)" if not visible else ""))
        return mx.gpu(index)

    def allgather(self, array: np.ndarray, name: str) -> np.ndarray:
        """Every rank's `array` (at least one row each; the counts may differ) concatenated
        along axis 0 in rank order."""
        if self.size == 1:
            return array
        with _peer_failures():
            gathered = self.hvd.allgather(to_device(array.copy(), mx.cpu()), name=name).asnumpy()
        if gathered.shape[1:] != array.shape[1:] or len(gathered) < self.size:
            raise PeerFailure(f"the {name!r} all-gather failed")
        return gathered

    def allgather_bytes(self, message: np.ndarray, name: str) -> np.ndarray:
        """Every rank's uint8 `message` (lengths may differ) concatenated in rank order."""
        if self.size == 1 or self.mpi is None:
            return self.allgather(message, name)
        # Horovod: the lengths, and proof that every rank is here (see the module docstring).
        lengths = self.allgather(np.array([len(message)], dtype=np.int64), name=f"{name}_lengths").tolist()
        gathered = np.empty(sum(lengths), dtype=np.uint8)
        self.mpi.Allgatherv(message, [gathered, lengths])
        return gathered

    def broadcast(self, array: np.ndarray, name: str) -> np.ndarray:
        """Rank 0's `array`; every rank passes one of the same shape and dtype."""
        return self.allgather(array[None], name)[0]

    def barrier(self):
        """Returns once every rank has called it."""
        self.allgather(np.zeros(1, dtype=np.uint8), name="barrier")

    def broadcast_parameters(self, params):
        """Overwrite every rank's Gluon parameters with rank 0's.

        Horovod's own broadcast: too big to gather. A failure here shows in the next collective.
        """
        if self.size > 1:
            with _peer_failures():
                self.hvd.broadcast_parameters(params, root_rank=0)


def init_world() -> World:
    if launched_size() == 1:
        return World()
    # A rank waiting in a collective yields its core instead of spinning on it (Open MPI reads
    # this at MPI_Init): with a Horovod thread per rank, spinning ranks steal the cores the
    # others compute on. On 2 cores and 2 ranks this halves the time of a step's computation.
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    # Horovod: initialise once; rank, size and local rank come from the launcher.
    import horovod.mxnet as hvd
    hvd.init()
    world = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd)
    world.mpi = _mpi_communicator(world)
    return world


def _mpi_communicator(world: World):
    """A communicator of Horovod's ranks in Horovod's order for `allgather_bytes`, or None
    where Horovod runs on Gloo (or its MPI does not allow calls from two threads): every
    rank agrees, since they must all take the same path.

    Horovod initialised MPI with MPI_THREAD_MULTIPLE (its background thread calls MPI while
    ours does) and finalizes it at exit; mpi4py only joins, on a communicator of its own.
    """
    comm = None
    if world.hvd.mpi_enabled():
        import mpi4py
        mpi4py.rc.initialize = mpi4py.rc.finalize = False
        from mpi4py import MPI
        if MPI.Is_initialized() and MPI.Query_thread() == MPI.THREAD_MULTIPLE:
            comm = MPI.COMM_WORLD
    usable = comm is not None and (comm.Get_rank(), comm.Get_size()) == (world.rank, world.size)
    if not world.allgather(np.array([usable], dtype=np.uint8), name="mpi_usable").all():
        return None
    return comm.Dup()
