#!/usr/bin/env bash
# Fresh machine -> trained model: installs the stack, trains on the bundled real sample
# (offline), evaluates it, and prints where the TensorBoard logs are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
run=runs/ag_news_mini
python launch/train.py --train samples/ag_news_mini/train.csv --test samples/ag_news_mini/test.csv \
    --model-dir "$run" --logdir "$run/tb" --metrics-out "$run/metrics.json" \
    --epoch 5 --lr 0.25 --dim 10 --word-ngrams 2 --bucket 10000000 "$@"
python launch/evaluate.py --model-dir "$run" --test samples/ag_news_mini/test.csv
echo "TensorBoard: . .venv/bin/activate && tensorboard --logdir $run/tb"
