"""N server processes on one listening socket, supervised by the process that bound it.

Prediction is CPU-bound Python, so one process uses about one core (the GIL): `--workers`
processes accept from the socket the parent bound, each connection going to whichever worker
takes it first. Workers are forked before the parent imports MXNet (its engine and thread
pools do not survive a fork). The first worker loads its model alone, so a bad model is
reported once; then the rest start. SIGTERM or SIGINT is passed on to every worker, which
drains its requests; the pool exits 0 when all of them did, else with a failed worker's status.
"""
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
from typing import Callable, List

from fasttext_horovod.data_pipeline.errors import InputError

_FORK = multiprocessing.get_context("fork")
ServeOne = Callable[[socket.socket, "multiprocessing.synchronize.Event"], None]


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as err:
        raise InputError(f"{host}:{port}", err.strerror or str(err)) from None
    return sock


def _worker_main(serve_one: ServeOne, sock: socket.socket, ready) -> None:
    """A worker's own signal handling, not the pool's (a fork copies handlers): until it
    listens it has no request to drain, so SIGTERM simply ends it, with status 0."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    serve_one(sock, ready)


def run_workers(count: int, sock: socket.socket, serve_one: ServeOne) -> int:
    """Run `serve_one(sock, ready)` in `count` forked processes until they stop; the pool's exit status.

    `serve_one` sets `ready` once it listens. A worker that stops on its own stops the pool:
    the others are told to drain, and the pool exits with that worker's status (1 if it was 0).
    """
    workers: List[multiprocessing.Process] = []
    stopping = False

    def stop(signum=None, frame=None):
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: the worker drains, then exits 0

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        ready = _FORK.Event()
        workers.append(_FORK.Process(target=_worker_main, args=(serve_one, sock, ready), name=f"serve-{index}"))
        workers[-1].start()
        while index == 0 and not stopping and workers[0].is_alive() and not ready.wait(0.1):
            pass
        if stopping or not workers[0].is_alive():
            break
    sock.close()  # the workers hold it
    failure = 0
    while alive := [worker for worker in workers if worker.is_alive()]:
        # A timeout, as a signal may come between the check and the wait.
        multiprocessing.connection.wait([worker.sentinel for worker in alive], timeout=1.0)
        if not stopping and any(not worker.is_alive() for worker in workers):
            failure = next(worker.exitcode for worker in workers if not worker.is_alive()) or 1
            stop()
    for worker in workers:
        worker.join()
    return failure or next((worker.exitcode for worker in workers if worker.exitcode), 0)
