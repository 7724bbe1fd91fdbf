#!/usr/bin/env bash
# Fresh machine -> test results: installs the stack, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"
