"""What the launcher (horovodrun, mpirun) tells a process, read before MXNet or Horovod loads.

Thread settings must be chosen before MXNet is imported and an error line must name its
rank even if Horovod never started, so these come from the launcher's environment.
"""
import os
from typing import Optional

# Set by horovodrun's Gloo launcher, Open MPI and MPICH/Hydra respectively.
_SIZE_VARS = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_RANK_VARS = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
_LOCAL_SIZE_VARS = ("HOROVOD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")


def _first_int(names) -> Optional[int]:
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def launched_size() -> int:
    """Processes in the job: 1 when not started by a launcher."""
    return _first_int(_SIZE_VARS) or 1


def launched_rank() -> Optional[int]:
    """This process's rank in a job of several processes, else None."""
    return _first_int(_RANK_VARS) if launched_size() > 1 else None


def threads_per_rank() -> Optional[int]:
    """CPU threads each rank should use so the ranks of a node do not oversubscribe its cores.

    None for a single process (MXNet's default). Every rank of a node computing at once
    with all cores' worth of OpenMP threads each makes them fight for the cores.
    """
    return None if launched_size() == 1 else cores_per_rank()


def cores_per_rank() -> int:
    """This node's cores divided among its ranks (all of them for a single process)."""
    local_size = _first_int(_LOCAL_SIZE_VARS) or launched_size()
    return max(1, (os.cpu_count() or 1) // local_size)
