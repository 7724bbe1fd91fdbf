"""Batches assembled ahead of the training step, in a background thread with a bounded queue.

Assembling a batch (gathering rows, `np.unique`, the CSR remap) is numpy work that
releases the GIL, so a thread overlaps it with the step's MXNet work; the step loop only
takes finished batches. At most `depth` batches wait, so memory stays bounded.
"""
import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetched(items: Iterator[T], depth: int = 4) -> Iterator[T]:
    """`items` in the same order, produced by a background thread up to `depth` ahead.

    An exception in the producer is raised here, at the item where it happened; leaving
    the loop early (break, an exception in the consumer) stops the producer.
    """
    ready: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            offer(_Failure(error))
            return
        offer(_DONE)

    producer = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        producer.join()
