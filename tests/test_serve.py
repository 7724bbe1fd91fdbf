"""launch/serve.py as a client sees it: a real server on 127.0.0.1, a real HTTP client (aiohttp's)."""
import asyncio
import json
import random
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
import pytest

from conftest import AG_NEWS, REPO, run_cli

MAX_REQUEST_BYTES = 64 * 1024


@dataclass
class Server:
    process: subprocess.Popen
    url: str


def _wait_for_address(process, log_path, timeout=120.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", log_path.read_text())
        if found or process.poll() is not None:
            return found
        time.sleep(0.05)
    return None


def _ping(url: str, timeout=120.0) -> int:
    async def poll():
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(url + "/ping") as response:
                        return response.status
                except aiohttp.ClientConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
    return asyncio.run(poll())


@contextmanager
def running_server(tmp_path, *args):
    """serve.py on a free port of 127.0.0.1 (--port 0), ready to answer; SIGTERM at the end."""
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(REPO / "launch" / "serve.py"), "--port", "0", *map(str, args)],
                                   cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        found = _wait_for_address(process, log_path)
        assert found, log_path.read_text()
        server = Server(process, f"http://127.0.0.1:{found.group(1)}")
        assert _ping(server.url) == 200, log_path.read_text()
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def server(request, tiny_model_dir, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("serve"), "--model-dir", tiny_model_dir, "--workers", request.param,
                        "--max-request-bytes", MAX_REQUEST_BYTES) as running:
        yield running


def post(url: str, bodies, content_type: str = "application/json"):
    """POST every body at once (concurrently, so the server batches them); (status, text) of each."""
    async def send_all():
        async with aiohttp.ClientSession() as session:
            async def send(body):
                data = body if isinstance(body, (bytes, str)) else json.dumps(body)
                async with session.post(url, data=data, headers={"Content-Type": content_type}) as response:
                    return response.status, await response.text()
            return await asyncio.gather(*(send(body) for body in bodies))
    return asyncio.run(send_all())


def get(url: str) -> str:
    async def fetch():
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 200
                return await response.text()
    return asyncio.run(fetch())


def ag_documents(text: str):
    """Documents as predict.py reads a file: one a line, split at "\\n" only."""
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


@pytest.fixture(scope="module")
def predicted(tiny_model_dir):
    """predict.py's every label of every AG test document, as (labels, "%.5f" probabilities)."""
    done = run_cli("predict", "--model-dir", tiny_model_dir, "--input", AG_NEWS / "test.csv", "--k", -1)
    assert done.returncode == 0, done.stderr
    return [(line.split()[0::2], line.split()[1::2]) for line in done.stdout.splitlines()]


def as_printed(answer: dict):
    return answer["label"], [f"{prob:.5f}" for prob in answer["prob"]]


@pytest.mark.slow
def test_every_ag_test_document_gets_predict_pys_labels_and_probabilities(server, predicted):
    """1,600 documents in concurrent requests of 1 to 40, each with its own k: each request gets
    predict.py's top k, whatever the batch its documents shared."""
    documents = ag_documents((AG_NEWS / "test.csv").read_text(encoding="utf-8"))
    assert len(documents) == len(predicted) == 1600
    rng = random.Random(0)
    requests, start = [], 0
    while start < len(documents):
        size = rng.randint(1, 40)
        requests.append((start, documents[start:start + size], rng.choice([1, 2, 3, 4, -1])))
        start += size
    answers = post(server.url + "/invocations",
                   [{"instances": texts, "configuration": {"k": k}} for _, texts, k in requests])
    for (start, texts, k), (status, text) in zip(requests, answers):
        assert status == 200, text
        got = json.loads(text)
        assert len(got) == len(texts)
        for offset, answer in enumerate(got):
            labels, probs = predicted[start + offset]
            cut = len(labels) if k == -1 else k
            assert as_printed(answer) == (labels[:cut], probs[:cut]), f"document {start + offset + 1}"


def test_jsonlines_and_text_plain_answer_as_json_does(server):
    documents = ["Stocks fell sharply on Wall Street after the Fed raised rates.", "The Red Sox won the World Series!",
                 "", "zxqv only unseen words"]
    (status, text), = post(server.url + "/invocations", [{"instances": documents, "configuration": {"k": 2}}])
    assert status == 200
    expected = json.loads(text)
    jsonlines = "".join(json.dumps({"source": d}) + "\n" for d in documents)
    (status, text), = post(server.url + "/invocations?k=2", [jsonlines], "application/jsonlines")
    assert status == 200 and [json.loads(line) for line in text.splitlines()] == expected
    (status, text), = post(server.url + "/invocations?k=2", ["\n".join(documents) + "\n"], "text/plain")
    assert status == 200 and json.loads(text) == expected


BAD_REQUESTS = [
    ("malformed JSON", b'{"instances": ["a"', "application/json", 400),
    ("not UTF-8", b'\xff\xfe', "application/json", 400),
    ("missing instances", {"documents": ["a"]}, "application/json", 400),
    ("instances not a list", {"instances": "a"}, "application/json", 400),
    ("an instance not a string", {"instances": ["a", 3]}, "application/json", 400),
    ("a lone surrogate", b'{"instances": ["\\ud800"]}', "application/json", 400),
    ("configuration not an object", {"instances": ["a"], "configuration": 2}, "application/json", 400),
    ("k zero", {"instances": ["a"], "configuration": {"k": 0}}, "application/json", 400),
    ("k above the labels", {"instances": ["a"], "configuration": {"k": 5}}, "application/json", 400),
    ("k not a number", {"instances": ["a"], "configuration": {"k": "two"}}, "application/json", 400),
    ("k a boolean", {"instances": ["a"], "configuration": {"k": True}}, "application/json", 400),
    ("jsonlines without source", b'{"text": "a"}\n', "application/jsonlines", 400),
    ("text/plain not UTF-8", b"caf\xe9\n", "text/plain", 400),
    ("unknown content type", b"<doc>a</doc>", "application/xml", 415),
    ("body over the limit", {"instances": ["word " * MAX_REQUEST_BYTES]}, "application/json", 413),
]


@pytest.mark.parametrize("what, body, content_type, status", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_gets_its_status_and_a_json_error(server, what, body, content_type, status):
    (got, text), = post(server.url + "/invocations", [body], content_type)
    assert got == status, text
    assert json.loads(text)["error"]


def test_bad_requests_leave_the_server_answering(server):
    post(server.url + "/invocations",
         [body for _, body, content_type, _ in BAD_REQUESTS if content_type == "application/json"])
    (status, text), = post(server.url + "/invocations", [{"instances": ["oil prices rise"]}])
    assert status == 200 and len(json.loads(text)) == 1


def _counter(metrics: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_every_workers_requests_errors_and_latency(server):
    before = get(server.url + "/metrics")
    post(server.url + "/invocations", [{"instances": ["a", "b", "c"]}] * 4 + [b"{"])
    after = get(server.url + "/metrics")
    ok, bad = '{route="/invocations",status="200"}', '{route="/invocations",status="400"}'
    assert _counter(after, "serve_requests_total", ok) - _counter(before, "serve_requests_total", ok) == 4
    assert _counter(after, "serve_requests_total", bad) - _counter(before, "serve_requests_total", bad) == 1
    assert _counter(after, "serve_documents_total") - _counter(before, "serve_documents_total") == 12
    latency = '{route="/invocations"}'
    assert _counter(after, "serve_request_seconds_count", latency) - \
        _counter(before, "serve_request_seconds_count", latency) == 5
    assert "# TYPE serve_request_seconds histogram" in after


@pytest.mark.slow
def test_sigterm_drains_requests_in_flight_then_exits_0(tiny_model_dir, tmp_path):
    """Requests the server holds when SIGTERM comes (here: waiting 3 s in the micro-batcher for
    others to join) are answered; then every worker and the server exit 0."""
    async def send_then_terminate(server):
        async with aiohttp.ClientSession() as session:
            async def send(text):
                async with session.post(server.url + "/invocations", json={"instances": [text]}) as response:
                    return response.status, await response.json(), time.monotonic()
            in_flight = [asyncio.ensure_future(send(text)) for text in ("Oil prices hit a record", "Red Sox win")]
            await asyncio.sleep(1.0)
            assert not any(request.done() for request in in_flight)
            server.process.send_signal(signal.SIGTERM)
            terminated = time.monotonic()
            return terminated, await asyncio.gather(*in_flight)

    with running_server(tmp_path, "--model-dir", tiny_model_dir, "--workers", 2, "--max-wait-ms", 3000) as server:
        terminated, answers = asyncio.run(send_then_terminate(server))
        assert [(status, len(answer)) for status, answer, _ in answers] == [(200, 1), (200, 1)]
        assert all(answered > terminated for _, _, answered in answers)
        assert server.process.wait(timeout=60) == 0


def test_a_missing_model_is_reported_once_with_several_workers(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "launch" / "serve.py"), "--model-dir", tmp_path / "missing",
                           "--workers", "3", "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == \
        [f"error: {tmp_path / 'missing'}: no such model directory"]
