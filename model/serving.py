"""Prediction for a server: concurrent requests share one forward pass (micro-batching).

A request's documents join a queue; the first request in an empty queue waits at most
`max_wait` seconds for others, a batch closes early once it holds `max_batch` documents,
and requests that arrive while a batch is scored wait in the socket and join the next one.
So at low load a request pays at most `max_wait`, and under load each pass scores many
documents for the per-pass overhead of one.

Scoring runs in the event loop's own thread: MXNet's NaiveEngine runs each operator in the
calling thread, and handing the pass to a thread of its own cost more than it saved (the
GIL is held through most of it): about half the throughput for serial 32-document requests
on our 2 shared cores.

Documents are scored by `inference.predict`, as `predict.py` scores them: a document's
probabilities do not depend on the batch it shares (each row of the bag product and of the
output product is its own sum), so the server answers exactly what `predict.py` prints.
"""
import asyncio
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import mxnet as mx

from fasttext_horovod.data_pipeline.readers import prepare_text

from .inference import TrainedModel, encode_texts, predict

Ranked = List[Tuple[str, float]]  # (label name, probability), best first


@dataclass
class _Request:
    texts: List[bytes]
    k: int
    answer: asyncio.Future


def _widest(ks: Sequence[int]) -> int:
    """The k that covers every request's k (-1: every label)."""
    return -1 if -1 in ks else max(ks)


class MicroBatcher:
    """Top-k labels of raw documents, joining concurrent callers into one forward pass.

    Create it inside the event loop that calls `predict`.
    """

    def __init__(self, trained: TrainedModel, ctx: mx.Context, max_batch: int = 1024, max_wait: float = 0.001):
        self.trained, self.ctx = trained, ctx
        self.max_batch, self.max_wait = max_batch, max_wait
        self.label_names = [label.decode("utf-8") for label in trained.dictionary.labels]
        self._queue: asyncio.Queue = asyncio.Queue()
        self._loop_task = asyncio.get_running_loop().create_task(self._serve_batches())

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    async def predict(self, texts: Sequence[str], k: int) -> List[Ranked]:
        """Per text, its best k labels (-1: all) with probabilities, as `predict.py` prints them.

        Raw text is normalised as the training corpus was; a text that is not valid
        Unicode raises UnicodeEncodeError before it is queued.
        """
        prepared = [prepare_text(text, self.trained.normalises_input) for text in texts]
        if not prepared:
            return []
        answer = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(prepared, k, answer))
        return await answer

    async def close(self) -> None:
        """Stop batching (call once no request is in flight)."""
        self._loop_task.cancel()
        await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _next_batch(self) -> List[_Request]:
        """Requests that arrived together: up to `max_batch` documents or `max_wait` seconds."""
        batch = [await self._queue.get()]
        size = len(batch[0].texts)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                request = self._queue.get_nowait()
            batch.append(request)
            size += len(request.texts)
        return batch

    async def _serve_batches(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                ranked = self._score(batch)
            except Exception as err:  # a failed pass fails its requests, never the server
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_exception(err)
                continue
            for request, answer in zip(batch, ranked):
                if not request.answer.done():  # a caller that went away is not answered
                    request.answer.set_result(answer)

    def _score(self, batch: List[_Request]) -> List[List[Ranked]]:
        """One forward pass over every document of the batch, split back per request."""
        texts = [text for request in batch for text in request.texts]
        docs = encode_texts(texts, self.trained.dictionary)
        # The best k' labels, cut to k, are the best k: ranking is a stable sort, best first.
        ranked = predict(self.trained.model, docs, _widest([request.k for request in batch]), self.ctx)
        names, answers, start = self.label_names, [], 0
        for request in batch:
            stop = start + len(request.texts)
            cut = None if request.k == -1 else request.k
            answers.append([[(names[label], prob) for label, prob in document[:cut]]
                            for document in ranked[start:stop]])
            start = stop
        return answers
