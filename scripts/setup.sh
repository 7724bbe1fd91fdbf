#!/usr/bin/env bash
# Installs the pinned stack from DEVELOPERS.md into .venv/ at the repo root.
# Idempotent: a second run only checks that every pin imports.
set -euo pipefail
cd "$(dirname "$0")/.."

# Horovod's MPI controller and mpi4py build against Open MPI's headers.
if ! command -v mpicc >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi

PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate

if ! python -c "import mxnet, gluonnlp, tensorboardX, horovod.mxnet, fasttext, matplotlib, aiohttp, prometheus_client, numba, pytest, hypothesis, PIL" 2>/dev/null; then
  # pybind11: fasttext 0.9.3 builds from source and, without build isolation, needs it already installed.
  pip install -q numpy==1.23.5 mxnet==1.9.1 gluonnlp==0.10.0 tensorboardX==2.6.5 \
      tensorboard==2.21.0 mpi4py==4.1.2 wheel==0.48.0 pybind11==2.13.6
  # Horovod compiles against the MXNet installed above, so it cannot build in isolation.
  HOROVOD_WITH_MXNET=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 \
  HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
    pip install -q --no-build-isolation --no-cache-dir horovod==0.28.1
  pip install -q --no-build-isolation -e ".[dev]"
fi
# Our code, as the fasttext_horovod namespace, editable: a change in the repo needs no reinstall.
python -c "import fasttext_horovod.distributed" 2>/dev/null || pip install -q --no-deps --no-build-isolation -e .
python -c "import horovod.mxnet as hvd; assert hvd.gloo_built(), 'horovod was built without Gloo'"
