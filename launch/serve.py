"""Serve a trained model over HTTP, as a SageMaker BlazingText endpoint does.

    python launch/serve.py --model-dir runs/ag                          # 127.0.0.1:8080
    python launch/serve.py --fasttext-model model.bin --workers 2 --port 9000
    curl -s localhost:8080/invocations -H 'Content-Type: application/json' \\
         -d '{"instances": ["stocks fell sharply on wall street"], "configuration": {"k": 2}}'
    # [{"label": ["__label__3", "__label__1"], "prob": [0.93, 0.04]}]

Routes and formats: see launch/endpoint.py. Raw text is normalised as the training corpus
was, and every document gets exactly the labels and probabilities `predict.py` prints.
Concurrent requests share forward passes (--max-batch documents, --max-wait-ms). Each of
--workers processes uses about one core. SIGTERM drains requests in flight, then exits 0.
"""
import argparse
import asyncio
import os
import sys
import tempfile

from fasttext_horovod.distributed.logs import log
from fasttext_horovod.launch.common import configure_mxnet, run_cli
from fasttext_horovod.launch.model_args import add_model_arguments
from fasttext_horovod.launch.worker_pool import bind, run_workers


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080, help="SageMaker's port; 0: any free port")
    parser.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    parser.add_argument("--thread", type=int, default=1, help="MXNet CPU threads per worker")
    parser.add_argument("--max-batch", type=int, default=1024, help="documents per forward pass, at most")
    parser.add_argument("--max-wait-ms", type=float, default=1.0,
                        help="how long a request waits for others to share its forward pass")
    parser.add_argument("--max-request-bytes", type=int, default=5 * 1024 * 1024,
                        help="larger request bodies are refused (413); SageMaker's own limit is 5 MB")
    parser.add_argument("--drain-seconds", type=float, default=30.0,
                        help="on SIGTERM, how long requests in flight may still take")
    args = parser.parse_args()
    for name in ("workers", "thread", "max_batch", "max_request_bytes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_wait_ms < 0 or args.drain_seconds < 0:
        parser.error("--max-wait-ms and --drain-seconds must not be negative")
    return args


def serve_worker(args, sock, ready) -> None:
    """One worker: load the model, then answer on `sock` until told to stop."""
    def main():
        configure_mxnet(args.thread, None)
        import mxnet as mx
        from fasttext_horovod.launch.endpoint import ServeSettings, serve
        from fasttext_horovod.launch.model_args import load_trained_model
        trained = load_trained_model(args, mx.cpu())
        settings = ServeSettings(args.max_batch, args.max_wait_ms / 1000, args.max_request_bytes, args.drain_seconds)
        asyncio.run(serve(trained, mx.cpu(), sock, ready, settings))
    run_cli(main)


def main():
    args = parse_args()
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    log.info(f"listening on http://{host}:{port}; {args.workers} worker(s) load the model, then answer")
    with tempfile.TemporaryDirectory(prefix="serve-metrics-") as metrics_dir:
        # Workers' Prometheus metrics live here, so /metrics sums all of them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        status = run_workers(args.workers, sock, lambda sock, ready: serve_worker(args, sock, ready))
    sys.exit(status)


if __name__ == "__main__":
    run_cli(main)
