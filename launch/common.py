"""What every entry point shares: thread settings before MXNet loads, and clean failures."""
import os
import sys


def configure_mxnet(threads, gpu):
    """Settings MXNet reads once, at import: call before anything imports it.

    fastText's --thread becomes the CPU threads of MXNet's operators. On the CPU, the
    synchronous engine runs each small operator in the calling thread: our steps are
    many tiny operators, and handing each to an engine thread costs more than it does.
    """
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MXNET_CPU_WORKER_NTHREADS"] = str(threads)
    if gpu is None:
        os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")


def run_cli(main) -> None:
    """Run `main()`; a user error prints one line naming its file and exits non-zero."""
    from data_pipeline.errors import InputError
    from model.checkpoint import CheckpointError
    from distributed.training import NonFiniteLoss
    try:
        main()
    except (InputError, CheckpointError, NonFiniteLoss) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
