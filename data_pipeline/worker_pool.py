"""An ordered map over forked worker processes with a bounded number of tasks in flight.

Preprocessing runs one function over many pieces of a corpus on every core. Results come
back in task order, at most `in_flight` tasks are submitted and not yet consumed (memory
stays bounded whatever the corpus size), and any way of stopping (a task raising, a
worker dying, the consumer giving up) cancels the queued tasks and waits for every worker
to exit before the exception goes on: no orphan processes.
"""
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Sequence


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


@contextmanager
def ordered_map(function: Callable, tasks: Iterable, workers: int, in_flight: int,
                on_worker_death: Callable[[object], Exception],
                initializer: Optional[Callable] = None, initargs: Sequence = ()) -> Iterator[Iterator]:
    """`with ordered_map(...) as results:` yields an iterator of `function(task)`, in task order.

    Workers are forked, so `initializer(*initargs)` hands them large read-only state (a
    dictionary) without pickling it; `function` and each task are pickled. A worker that
    dies raises `on_worker_death(task)` for the task whose result was awaited. With one
    worker the tasks run in this process, one at a time.
    """
    if workers <= 1:
        if initializer:
            initializer(*initargs)
        yield map(function, tasks)
        return
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=initializer, initargs=tuple(initargs))
    pending = deque()

    def results():
        for task in tasks:
            try:
                pending.append((task, executor.submit(function, task)))
            except BrokenProcessPool:  # noticed before the dead worker's own task was awaited
                raise on_worker_death(pending[0][0] if pending else task) from None
            if len(pending) >= in_flight:
                yield _result(*pending.popleft(), on_worker_death)
        while pending:
            yield _result(*pending.popleft(), on_worker_death)

    try:
        yield results()
    finally:
        for _, future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def _result(task, future, on_worker_death):
    try:
        return future.result()
    except BrokenProcessPool:
        raise on_worker_death(task) from None
