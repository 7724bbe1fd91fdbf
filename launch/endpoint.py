"""The HTTP side of `serve.py`: SageMaker's container contract in BlazingText's formats.

    GET  /ping         200 once the model is loaded (a worker listens only after loading it)
    POST /invocations  application/json       {"instances": ["text", ...], "configuration": {"k": 2}}
                       application/jsonlines  one {"source": "text"} a line
                       text/plain             one document a line
                       -> per document {"label": ["__label__1", ...], "prob": [0.93, ...]}: a JSON
                          array (jsonlines: one object a line); k also from `?k=`, default 1
    GET  /metrics      Prometheus text: requests by route and status, latency, batch sizes

Every error is JSON (`{"error": "..."}`): 400 bad JSON, missing field or k out of range,
413 body over the limit, 415 unknown content type, 500 a failure of our own; no request
can stop the server. It lives in launch/ beside its one entry point: it is how a process
is reached, not model code (model/ stays free of I/O) nor a rank's (distributed/).
"""
import asyncio
import json
import signal
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from fasttext_horovod.model.serving import MicroBatcher

JSON, JSONLINES, TEXT = "application/json", "application/jsonlines", "text/plain"
BATCHER = web.AppKey("batcher", MicroBatcher)

# Workers write these to PROMETHEUS_MULTIPROC_DIR (serve.py sets it before any worker
# starts); /metrics sums every worker's files, whichever worker answers.
REQUESTS = Counter("serve_requests", "HTTP requests answered", ["route", "status"])
LATENCY = Histogram("serve_request_seconds", "Time from request to response", ["route"],
                    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))
DOCUMENTS = Counter("serve_documents", "Documents predicted")
REQUEST_DOCUMENTS = Histogram("serve_request_documents", "Documents per /invocations request",
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))


class RequestError(Exception):
    """A request we refuse: its status and a message for the client."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _json(body: bytes):
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise RequestError(f"malformed JSON: {err}") from None


def _parse_json(body: bytes) -> Tuple[list, Optional[object]]:
    """BlazingText's request: the instances and, if given, configuration.k."""
    request = _json(body)
    if not isinstance(request, dict) or "instances" not in request:
        raise RequestError('expected {"instances": ["text", ...]}')
    configuration = request.get("configuration", {})
    if not isinstance(configuration, dict):
        raise RequestError('"configuration" must be an object, e.g. {"k": 2}')
    return request["instances"], configuration.get("k")


def _parse_jsonlines(body: bytes) -> Tuple[list, None]:
    texts = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        record = _json(line)
        if not isinstance(record, dict) or "source" not in record:
            raise RequestError(f'line {number}: expected {{"source": "text"}}')
        texts.append(record["source"])
    return texts, None


def _parse_text(body: bytes) -> Tuple[List[str], None]:
    """Lines as `predict.py` reads a file: split at "\\n" only, a last empty line is no document."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"not valid UTF-8 (byte {err.start + 1})") from None
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines, None


PARSERS = {JSON: _parse_json, JSONLINES: _parse_jsonlines, TEXT: _parse_text}


def _label_count(value, num_labels: int) -> int:
    """k as fastText's predict takes it, bounded by the model: 1..num_labels, or -1 for all."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise RequestError(f"k must be an integer, got {value!r}") from None
    if not isinstance(value, int) or isinstance(value, bool) or not (1 <= value <= num_labels or value == -1):
        raise RequestError(f"k must be 1..{num_labels} (the model's labels) or -1 for all, got {value!r}")
    return value


def _answer(ranked) -> dict:
    return {"label": [label for label, _ in ranked], "prob": [prob for _, prob in ranked]}


async def invocations(request: web.Request) -> web.Response:
    batcher = request.app[BATCHER]
    content_type = request.content_type
    if content_type not in PARSERS:
        raise RequestError(f"content type {content_type!r}: use one of {', '.join(PARSERS)}", 415)
    texts, k = PARSERS[content_type](await request.read())
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise RequestError("instances must be a list of strings")
    k = _label_count(k if k is not None else request.query.get("k", 1), batcher.num_labels)
    try:
        predictions = await batcher.predict(texts, k)
    except UnicodeEncodeError:
        raise RequestError("a document is not valid Unicode (a lone surrogate)") from None
    DOCUMENTS.inc(len(texts))
    REQUEST_DOCUMENTS.observe(len(texts))
    if content_type == JSONLINES:
        lines = "".join(json.dumps(_answer(ranked)) + "\n" for ranked in predictions)
        return web.Response(text=lines, content_type=JSONLINES)
    return web.Response(text=json.dumps([_answer(ranked) for ranked in predictions]), content_type=JSON)


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="", content_type=TEXT)


async def metrics(request: web.Request) -> web.Response:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def count_and_contain(request: web.Request, handler) -> web.StreamResponse:
    """Every answer counted and timed; every failure a JSON error, never a dead server."""
    start = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unrouted"
    try:
        response = await handler(request)
    except RequestError as err:
        response = web.json_response({"error": err.message}, status=err.status)
    except web.HTTPException as err:  # aiohttp's own: 404, 405, 413 (body over client_max_size)
        response = web.json_response({"error": err.text}, status=err.status)
    except Exception as err:  # our bug: this client gets a 500, the server lives on
        response = web.json_response({"error": f"internal error: {type(err).__name__}: {err}"}, status=500)
    REQUESTS.labels(route, str(response.status)).inc()
    LATENCY.labels(route).observe(time.perf_counter() - start)
    return response


def build_app(batcher: MicroBatcher, max_request_bytes: int) -> web.Application:
    app = web.Application(middlewares=[count_and_contain], client_max_size=max_request_bytes)
    app[BATCHER] = batcher
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/metrics", metrics)
    return app


@dataclass
class ServeSettings:
    max_batch: int            # documents per forward pass, at most (a larger request is one pass)
    max_wait: float           # seconds a request waits for others to join its pass
    max_request_bytes: int    # a larger body is refused with 413
    drain_seconds: float      # on SIGTERM, how long requests in flight may still take


async def serve(trained, ctx, sock, ready, settings: ServeSettings) -> None:
    """Answer requests on the listening `sock` until SIGTERM or SIGINT, then drain and return.

    Draining: stop accepting, let every request in flight finish (at most `drain_seconds`),
    then stop the batcher. `ready` is set once the socket is served.
    """
    loop = asyncio.get_running_loop()
    batcher = MicroBatcher(trained, ctx, settings.max_batch, settings.max_wait)
    runner = web.AppRunner(build_app(batcher, settings.max_request_bytes), access_log=None,
                           shutdown_timeout=settings.drain_seconds)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ready.set()
    await stop.wait()
    await runner.cleanup()
    await batcher.close()
