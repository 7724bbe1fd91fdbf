"""What every entry point shares: thread settings before MXNet loads, and clean failures."""
import errno
import os
import sys

_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                  errno.EISDIR}


def configure_mxnet(threads, gpu):
    """Settings MXNet reads once, at import: call before anything imports it.

    fastText's --thread becomes the CPU threads of MXNet's operators. On the CPU, the
    synchronous engine runs each small operator in the calling thread: our steps are
    many tiny operators, and handing each to an engine thread costs more than it does.
    """
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MXNET_CPU_WORKER_NTHREADS"] = str(threads)
    # OpenMP's threads sleep between operators instead of spinning: our operators are tiny,
    # and spinning threads on a busy machine made a 2-thread step 15x slower (bench notes).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if gpu is None:
        os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")
    _start_engine_quietly()


def _start_engine_quietly():
    """Create MXNet's engine now, with stderr muted for that moment.

    MXNet logs "start using engine: NaiveEngine" to stderr whenever the engine was chosen
    by MXNET_ENGINE_TYPE; created lazily, that line would land after our own output, even
    after the one-line error of a failed run.
    """
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import mxnet as mx
        mx.nd.zeros(1).wait_to_read()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run_cli(main) -> None:
    """Run `main()`; a user error prints one line naming its file and exits non-zero.

    Under a launcher the line also names the rank (`error: rank 1: ...`); a rank stopped
    because another one failed says so and exits non-zero too, so no rank hangs or stays.
    """
    from fasttext_horovod.data_pipeline.errors import InputError
    from fasttext_horovod.distributed.errors import NonFiniteLoss, PeerFailure, Stopped
    from fasttext_horovod.distributed.launcher import launched_rank
    from fasttext_horovod.distributed.logs import init_logging, log
    from fasttext_horovod.model.checkpoint import CheckpointError
    init_logging()
    where = "" if launched_rank() is None else f"rank {launched_rank()}: "
    try:
        main()
    except (InputError, CheckpointError, NonFiniteLoss) as err:
        log.error(f"error: {where}{err}")
        sys.exit(2)
    except PeerFailure as err:
        log.error(f"error: {where}{err}")
        sys.exit(1)
    except Stopped as err:
        log.info(f"interrupted: {err}")
        sys.exit(130)
    except KeyboardInterrupt:
        log.info("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as err:
        if err.errno not in _OUTPUT_ERRNOS:
            raise
        # A full disk or a directory that stopped being writable mid-run: the path, not a traceback.
        log.error(f"error: {where}{err.filename or 'writing output'}: {err.strerror}")
        sys.exit(2)


def describe_hardware(gpu=None, world_size: int = 1) -> str:
    """`CPU model, N cores[; GPU name]` for reports: the CPU from /proc/cpuinfo, the GPU from nvidia-smi."""
    import subprocess
    model = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    text = f"{model}, {os.cpu_count()} cores"
    if gpu is None:
        return text
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        names = []
    name = names[gpu].strip() if gpu < len(names) else f"GPU {gpu} (nvidia-smi unavailable)"
    return text + (f"; {world_size} x {name}" if world_size > 1 else f"; {name}")
