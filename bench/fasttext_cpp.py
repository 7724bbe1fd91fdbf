"""fastText's own C++ trainer (the `fasttext` pip package) as the reference to measure against.

Each run gets a fresh process, as the fastText CLI does: fastText 0.9.3 initialises only
`thread` tenths of its input matrix and leaves the rest as allocated, which is zero in a
fresh process but stale memory after an earlier model was freed in the same process
(repeated in-process runs then abort with "Encountered NaN").
"""
import json
import os
import subprocess
import sys
import tempfile

from fasttext_horovod.data_pipeline.readers import read_records

_RUN = r"""
import json, resource, sys, time
import fasttext
settings = json.loads(sys.argv[3])
start = time.perf_counter()
model = fasttext.train_supervised(sys.argv[1], verbose=0, **settings)
train_seconds = time.perf_counter() - start
n, precision, recall = model.test(sys.argv[2])
if sys.argv[4:]:
    model.save_model(sys.argv[4])
print(json.dumps({"accuracy": precision, "n_test": n, "train_seconds": train_seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_fasttext_format(corpus_path: str, out_path: str) -> None:
    """The text our reader produces (normalised like fastText's script) as `__label__` lines."""
    with open(out_path, "wb") as out:
        for record in read_records(corpus_path):
            out.write(b" ".join(record.tokens[:-1]) + b"\n")  # fastText appends its own </s>


def train_and_test(train_txt: str, test_txt: str, retries: int = 3, save_to: str = None, **settings) -> dict:
    """Accuracy, train seconds and process wall seconds of one fastText run (fresh process).

    `settings` are `train_supervised` keyword arguments; `save_to` also saves the model
    there (a `.bin`). A run aborted by fastText's NaN check is retried; its wall time is
    not counted.
    """
    for _ in range(retries):
        start = os.times().elapsed
        done = subprocess.run([sys.executable, "-c", _RUN, train_txt, test_txt, json.dumps(settings),
                               *([save_to] if save_to else [])],
                              capture_output=True, text=True)
        wall = os.times().elapsed - start
        if done.returncode == 0:
            return {**json.loads(done.stdout), "wall_seconds": wall}
        if "NaN" not in done.stderr:
            raise RuntimeError(f"fastText failed: {done.stderr.strip()}")
    raise RuntimeError(f"fastText aborted with NaN {retries} times in a row")


def fasttext_copies(train_csv: str, test_csv: str, directory: str = None):
    """(train.txt, test.txt) in fastText's format, written to `directory` (default: a temp dir)."""
    directory = directory or tempfile.mkdtemp(prefix="fasttext-input-")
    paths = []
    for source, name in ((train_csv, "train.txt"), (test_csv, "test.txt")):
        path = os.path.join(directory, name)
        write_fasttext_format(source, path)
        paths.append(path)
    return tuple(paths)
