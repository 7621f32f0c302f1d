#!/usr/bin/env bash
# Recipe of the shipped dense checkpoint (retrieval/checkpoints/dense): blur-invariant per-cell
# descriptors for geometric re-ranking (`query --rerank K`, `bench map --rerank K`).
#
# Data: the `small` preset's train instances (the layer bank `train` builds, object layers over
# backgrounds unrelated to the instance), exact pixel correspondences from the simulator, val
# instances for validation; then the re-ranking parameters are chosen on all val queries with
# 10,000 virtual distractors (scripts/tune_rerank.py) and stored in dense.json. Test instances
# are never seen.
#
#   bash scripts/train_dense.sh                 # CPU; an interrupted run resumes when rerun
#   DEVICE=cuda bash scripts/train_dense.sh     # GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/blur-retrieval}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data/small}
RUN=${RUN:-runs/dense}
STEPS=${STEPS:-3000}   # 2-core CPU alone: 0.56-0.58 s/step (steps 20-240 of the shipped run), ~29 min; it shared the CPU, 57 min
DEVICE=${DEVICE:-cpu}
DEST=${DEST:-retrieval/checkpoints/dense}

[ -f "$DATA/manifest.parquet" ] || $BIN synth "$DATA" --preset small --splits val,test -q
resume=()
[ -f "$RUN/dense_state.pt" ] && resume=(--resume)
$BIN train-dense "$DATA" --out "$RUN" --steps "$STEPS" --pairs 24 --val-every 500 \
  --per-category 4 --device "$DEVICE" -q "${resume[@]}"
$PYTHON scripts/tune_rerank.py "$DATA" --dense "$RUN" --k 50 --distractors 10000 \
  --report "$RUN/tune_rerank.json" \
  --write "$RUN/dense.json"
mkdir -p "$DEST"
cp "$RUN/dense.safetensors" "$RUN/dense.json" "$RUN/train_log.jsonl" "$RUN/tune_rerank.json" "$DEST/"
$PYTHON scripts/plot_dense_training.py "$RUN" --out "$DEST/training.png"
