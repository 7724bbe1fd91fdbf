"""What every entry point shares: thread settings before MXNet loads, and clean failures."""
import os
import sys


def limit_cpu_threads(threads):
    """fastText's --thread: the CPU threads MXNet's operators may use (set before import)."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MXNET_CPU_WORKER_NTHREADS"] = str(threads)


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
