#!/usr/bin/env bash
# Recipe of the paper-scale benchmark: the default (`small`) test set with 1,000,000 distractors,
# the four shipped methods compared on identical data, end to end (render, embed, FAISS) on a
# CUDA GPU when there is one, else on the CPU.
#
# Distractors are virtual rows in the published layout: about DISTRACTOR_OBJECTS (1,562) objects,
# each trajectory at DISTRACTOR_EXPOSURES (all 11) exposures, which one render makes together
# (4.4x the images per second of one image per trajectory, `bench sim --sizes 96x128` on 2 cores).
# The loader workers render them on the CPU while the GPU embeds (WORKERS=0 renders them on the
# GPU in the main process instead: on an H200 machine that ran at 139 images/s, against 678 with
# 15 workers on its 16 cores, both with one image per trajectory), so no image file is written.
# Embeddings are cached in OUT/.cache, so a run that is stopped can be started again with the
# same command and goes on from the cached vectors. The index is IVF (factory "auto" above 100k
# vectors) with recall@100 against exact search reported.
#
#   bash scripts/bench_map_1m_gpu.sh [BENCH MAP OPTIONS...]
#
# Overridable: OUT, DISTRACTORS, DISTRACTOR_OBJECTS (empty: 10 images per object),
# DISTRACTOR_EXPOSURES, METHODS, PRESET, DEVICE, WORKERS, BATCH_SIZE, BIN, PYTHON;
# options given on the command line are passed on to `bench map` after the script's own.
# DEVICE unset: cuda when torch sees a CUDA GPU (FAISS searches on the GPU too when the loaded
# FAISS is a GPU build that finds one, else on the CPU, said on stderr), otherwise the CPU, said
# on stderr with the reason (WORKERS then defaults to 0, BATCH_SIZE to 64; on CUDA to the cores
# less one, and 512). DEVICE=cuda insists on the GPU (bench map refuses when it is missing).
# A quick check of the fallback:
#   PRESET=tiny DISTRACTORS=200 OUT=/tmp/bench-map-tiny bash scripts/bench_map_1m_gpu.sh
#
# Set-up on a fresh GPU machine: `python3 -m venv .venv && .venv/bin/pip install -e '.[gpu]' &&
# .venv/bin/pip install --force-reinstall --no-deps 'faiss-gpu>=1.15'` (the default install has
# faiss-cpu, whose files pip may write over faiss-gpu's: the reinstall puts the GPU build back).
# faiss-gpu 1.15 is built for CUDA 12 and pulls CUDA 12's runtime and cuBLAS; where they cannot be
# installed, faiss-cpu searches on the CPU and the rest still runs on the GPU.
# On the CPU, 100,000 distractors (one image per trajectory) took 36-61 min on 2 cores
# (docs/results.md), so 1,000,000 would take hours; on an H200 machine with 15 render workers the
# same layout ran at 678 images/s, about 25 minutes for the million (not run to the end).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/blur-retrieval}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/bench-map-1m}
PRESET=${PRESET:-small}
DISTRACTORS=${DISTRACTORS:-1000000}
DISTRACTOR_OBJECTS=${DISTRACTOR_OBJECTS-1562}
DISTRACTOR_EXPOSURES=${DISTRACTOR_EXPOSURES:-11}
METHODS=${METHODS:-blur-aware,standard,sharp-only,blur-aware-no-be}

if [[ -z "${DEVICE:-}" ]]; then
  # Prints nothing and succeeds when torch can use CUDA; otherwise prints why not. A FAISS without
  # GPU code only moves the search to the CPU (said on stderr): rendering and embedding, the
  # run's time, stay on the GPU.
  if missing=$("$PYTHON" - <<'EOF'
import sys

import torch

from indexer import gpu

if not torch.cuda.is_available():
    print("torch sees no CUDA GPU")
    sys.exit(1)
if not gpu.has_gpu_build():
    print(f"bench_map_1m_gpu.sh: FAISS searches on the CPU: the loaded FAISS is a CPU-only build "
          f"({gpu.GPU_INSTALL_HINT})", file=sys.stderr)
elif gpu.gpu_count() == 0:
    print("bench_map_1m_gpu.sh: FAISS searches on the CPU: its GPU build finds no GPU",
          file=sys.stderr)
EOF
  ); then
    DEVICE=cuda
  else
    [[ -n "$missing" ]] || missing="the GPU check itself failed (see above)"
    echo "bench_map_1m_gpu.sh: no GPU run here: $missing. Falling back to the CPU" \
         "(render, embed and FAISS on the CPU; set DEVICE=cuda to insist on the GPU)." >&2
    DEVICE=cpu
  fi
fi
if [[ "$DEVICE" == cuda ]]; then
  WORKERS=${WORKERS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
  BATCH_SIZE=${BATCH_SIZE:-512}
else
  WORKERS=${WORKERS:-0}
  BATCH_SIZE=${BATCH_SIZE:-64}
fi

LAYOUT=(--distractor-exposures "$DISTRACTOR_EXPOSURES")
SPREAD="10 images per object"
if [[ -n "$DISTRACTOR_OBJECTS" ]]; then
  LAYOUT+=(--distractor-objects "$DISTRACTOR_OBJECTS")
  SPREAD="about $DISTRACTOR_OBJECTS objects"
fi

echo "bench map: preset $PRESET, $DISTRACTORS distractors ($SPREAD, $DISTRACTOR_EXPOSURES" \
     "exposures per trajectory), methods $METHODS, device $DEVICE," \
     "$WORKERS workers, batch $BATCH_SIZE, out $OUT"
start=$(date +%s)
"$BIN" bench map --preset "$PRESET" --distractors "$DISTRACTORS" "${LAYOUT[@]}" --methods "$METHODS" \
  --device "$DEVICE" --batch-size "$BATCH_SIZE" --workers "$WORKERS" --out "$OUT" "$@"
echo "bench map with $DISTRACTORS distractors on $DEVICE took $(( $(date +%s) - start )) s;" \
     "report in $OUT/report.md"
