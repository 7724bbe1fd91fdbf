"""Batches assembled ahead of the training step, in a forked process with a bounded queue.

Assembling a batch (gathering rows, `np.unique`, the CSR remap) is numpy work on small
arrays that mostly holds the GIL. In a thread it fought the step loop for the GIL at every
MXNet call: on a loaded machine each call's return waited for the thread to be scheduled,
and a Debian epoch ran at 0.7x the speed of no prefetching at all. A process has its own
GIL; the step loop only unpickles finished batches (tens of microseconds).

The process is forked once, before the model's matrices exist, and serves one epoch after
another on request: forked later, every page of the input matrix the step loop writes
would be copied (the child would still map the old one), doubling the largest allocation
over an epoch. The child never touches MXNet or Horovod. At most `depth` batches wait, so
memory stays bounded.

A batch's arrays travel through memory both processes map (`_Slots`), and only their small
pickle through the queue: pushed through the queue's pipe, a Debian batch of 1,024 documents
(2.6 MB) took the step loop 7.5 ms to receive, 5 ms of every 18 ms step; from a slot it is one
copy, ~0.4 ms.
"""
import itertools
import mmap
import multiprocessing
import pickle
import queue
import signal
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

from .batching import Batch, BatchStream

_END = "end"          # the last message of an epoch (also of a cancelled one)
_POLL_SECONDS = 1.0   # how often a waiting consumer checks that the producer is alive
_ALIGN = 64           # where each array starts in a slot
_MAX_SLOT_BYTES = 256 << 20  # a larger batch goes through the queue itself


class ProducerDied(RuntimeError):
    """The prefetching process ended without finishing an epoch (killed, out of memory)."""


class _Failure:
    """An exception raised while producing, carried to the consumer."""

    def __init__(self, error: BaseException):
        try:  # the consumer must be able to rebuild it; not every exception pickles
            pickle.loads(pickle.dumps(error))
        except Exception:
            error = RuntimeError(f"{type(error).__name__}: {error}")
        self.error = error


@dataclass
class _InSlot:
    """A message whose arrays wait in slot `slot`: its pickle, and where each array lies there."""
    slot: int
    pickled: bytes
    extents: List[Tuple[int, int]]  # (offset, bytes), in the pickle's buffer order


class _Slots:
    """`count` slots of `size` bytes in anonymous memory shared by the processes forked after it,
    and a queue of the free ones. The producer packs an item's contiguous arrays into a free slot
    (pickle protocol 5's out-of-band buffers); the consumer copies them out and frees the slot.
    An item with no arrays, or too large for a slot, travels whole."""

    def __init__(self, context, count: int, size: int):
        self.size = size
        self.memory = mmap.mmap(-1, max(1, count * size)) if size else None  # MAP_SHARED
        self.free = context.SimpleQueue()
        for slot in range(count if size else 0):
            self.free.put(slot)

    def pack(self, item):
        buffers = []
        pickled = pickle.dumps(item, protocol=5, buffer_callback=buffers.append)
        views = [buffer.raw() for buffer in buffers]
        extents, offset = [], 0
        for view in views:
            extents.append((offset, view.nbytes))
            offset += -(-view.nbytes // _ALIGN) * _ALIGN
        if self.memory is None or not views or offset > self.size:
            return item
        slot = self.free.get()
        start = slot * self.size
        for view, (offset, nbytes) in zip(views, extents):
            self.memory[start + offset:start + offset + nbytes] = view
        return _InSlot(slot, pickled, extents)

    def unpack(self, message):
        if not isinstance(message, _InSlot):
            return message
        start = message.slot * self.size
        memory = memoryview(self.memory)
        # Copies (writable, like the arrays of an ordinary pickle): the slot is reused once freed.
        buffers = [bytearray(memory[start + offset:start + offset + nbytes]) for offset, nbytes in message.extents]
        memory.release()
        self.free.put(message.slot)
        return pickle.loads(message.pickled, buffers=buffers)


def _serve(stream: BatchStream, requests, ready, cancel, slots: _Slots) -> None:
    """The producer: for each (epoch, start batch) request, that epoch's batches, then `_END`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the step loop decides how a run stops
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler was inherited by fork
    while True:
        request: Optional[Tuple[int, int]] = requests.get()
        if request is None:
            break
        try:
            for batch in stream.epoch(*request):
                if cancel.is_set():
                    break
                ready.put(slots.pack(batch))
        except BaseException as error:
            ready.put(_Failure(error))
        ready.put(_END)
    ready.close()
    ready.join_thread()


class Lookahead:
    """An iterator that can be told to take its next item early (`fetch_next`): the step
    loop assembles the next batch while this step's gradient exchange is under way."""

    def __init__(self, items: Iterator):
        self._items = iter(items)
        self._fetched = []  # at most one item, taken early

    def __iter__(self) -> "Lookahead":
        return self

    def __next__(self):
        if self._fetched:
            return self._fetched.pop()
        return next(self._items)

    def fetch_next(self) -> None:
        if not self._fetched:
            self._fetched.extend(itertools.islice(self._items, 1))


class DirectStream:
    """A `BatchStream` assembled in the step loop itself, with `PrefetchingStream`'s interface."""

    def __init__(self, stream: BatchStream):
        self.stream = stream

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        return self.stream.epoch(epoch, start_batch)

    def close(self):
        """Nothing runs beside the step loop."""

    def __enter__(self) -> "DirectStream":
        return self

    def __exit__(self, *exc):
        self.close()


class PrefetchingStream:
    """A `BatchStream` whose batches a forked process assembles ahead; use as a context manager.

    `epoch(e, start)` yields what `stream.epoch(e, start)` does, in order. An exception
    in the producer is raised at the batch where it happened; leaving an epoch early
    (break, an exception in the consumer) cancels the rest of it.
    """

    def __init__(self, stream: BatchStream, depth: int = 4):
        self.stream = stream
        context = multiprocessing.get_context("fork")
        self._requests = context.SimpleQueue()
        self._ready = context.Queue(maxsize=depth)
        self._cancel = context.Event()
        # One slot more than can wait: the producer fills one while `depth` wait.
        slot_bytes = min(stream.largest_batch_bytes(), _MAX_SLOT_BYTES)
        self._slots = _Slots(context, depth + 1, slot_bytes + 8 * _ALIGN if slot_bytes else 0)
        self._closed = False
        self._active: Optional[Iterator[Batch]] = None
        self._process = context.Process(target=_serve, args=(stream, self._requests, self._ready, self._cancel,
                                                             self._slots),
                                        name="batch-prefetch", daemon=True)
        self._process.start()

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        if self._active is not None:  # an epoch left unfinished: its batches must not be taken for these
            self._active.close()
        self._active = self._epoch(epoch, start_batch)
        return self._active

    def _epoch(self, epoch: int, start_batch: int) -> Iterator[Batch]:
        self._cancel.clear()
        self._requests.put((epoch, start_batch))
        finished = False
        try:
            while True:
                item = self._next()
                if isinstance(item, str) and item == _END:
                    finished = True
                    return
                if isinstance(item, _Failure):
                    self._next()  # its epoch's `_END`
                    finished = True
                    raise item.error
                yield item
        finally:
            if not finished and not self._closed:  # (a generator dropped after `close` is finished by then)
                self._cancel.set()
                while not (isinstance(item := self._next(), str) and item == _END):
                    pass

    def _next(self):
        while True:
            try:
                return self._slots.unpack(self._ready.get(timeout=_POLL_SECONDS))
            except queue.Empty:
                if not self._process.is_alive():
                    raise ProducerDied(f"the batch-prefetching process {self._process.pid} ended with code "
                                       f"{self._process.exitcode} in the middle of an epoch") from None

    def close(self):
        self._closed = True
        if self._process.is_alive():
            self._requests.put(None)
            self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._ready.close()
        self._ready.cancel_join_thread()

    def __enter__(self) -> "PrefetchingStream":
        return self

    def __exit__(self, *exc):
        self.close()
