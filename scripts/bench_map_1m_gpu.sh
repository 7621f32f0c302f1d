#!/usr/bin/env bash
# Recipe of the paper-scale benchmark: the default (`small`) test set with 1,000,000 distractors,
# the four shipped methods compared on identical data, on a machine with a CUDA GPU.
#
# Distractors are virtual rows: the loader workers render them on the CPU while the GPU
# embeds (WORKERS=0 renders them on the GPU in the main process instead), so no image file
# is written. Embeddings are cached in OUT/.cache, so a run that is stopped
# can be started again with the same command and goes on from the cached vectors. The index is
# IVF (factory "auto" above 100k vectors) with recall@100 against exact search reported.
#
#   bash scripts/bench_map_1m_gpu.sh                 # OUT, DISTRACTORS, METHODS, BIN overridable
#
# Set-up on a fresh GPU machine: `python3 -m venv .venv && .venv/bin/pip install -e '.[gpu]' &&
# .venv/bin/pip install --force-reinstall --no-deps 'faiss-gpu>=1.15'` (the default install has
# faiss-cpu, whose files pip may write over faiss-gpu's: the reinstall puts the GPU build back). On a CPU-only machine, use DEVICE=cpu WORKERS=0: 100,000
# distractors took 61 min on 2 cores (docs/results.md), so 1,000,000 would take about 7 hours.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/blur-retrieval}
OUT=${OUT:-runs/bench-map-1m}
DISTRACTORS=${DISTRACTORS:-1000000}
METHODS=${METHODS:-blur-aware,standard,sharp-only,blur-aware-no-be}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-8}

start=$(date +%s)
"$BIN" bench map --preset small --distractors "$DISTRACTORS" --methods "$METHODS" \
  --device "$DEVICE" --batch-size 512 --workers "$WORKERS" --out "$OUT"
echo "bench map with $DISTRACTORS distractors took $(( $(date +%s) - start )) s; report in $OUT/report.md"
