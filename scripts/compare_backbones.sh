#!/usr/bin/env bash
# Candidate backbones on the same stream and budget: validation mAP@100 after STEPS steps, the
# wall time it took and the training images per second (from each run's train_log.jsonl).
#
#   bash scripts/compare_backbones.sh            # STEPS, BACKBONES, DATA, RUNS overridable
#
# Every run: blur-aware (all four losses), crop head, batch 32 x 4, the shipped recipe's
# optimiser and loss settings, the small preset's train instances as a composite stream.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/blur-retrieval}
DATA=${DATA:-data/small}
RUNS=${RUNS:-runs/backbones}
STEPS=${STEPS:-300}
BACKBONES=${BACKBONES:-plainnet_s mobilenetv3_small_100 resnet10t}
DEVICE=${DEVICE:-cpu}

[ -f "$DATA/manifest.parquet" ] || "$BIN" synth "$DATA" --preset small --splits val,test -q
mkdir -p "$RUNS"
for backbone in $BACKBONES; do
  rm -rf "${RUNS:?}/$backbone"
  start=$(date +%s)
  "$BIN" train "$DATA" --out "$RUNS/$backbone" --backbone "$backbone" --epochs 1 \
    --steps-per-epoch "$STEPS" --batch 32,4 --lr 2e-3 --schedule cosine --cls-weight 1 \
    --cls-margin 0 --cls-scale 16 --max-val-queries 1000 --device "$DEVICE" -q
  echo "$backbone wall_s $(( $(date +%s) - start ))"
done
.venv/bin/python - "$RUNS" $BACKBONES <<'PY'
import json, sys
from pathlib import Path
runs, names = Path(sys.argv[1]), sys.argv[2:]
print("| backbone | steps | train img/s | train min | val mAP@100 | mAP points per minute |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name in names:
    records = [json.loads(line) for line in (runs / name / "train_log.jsonl").open()]
    train = [r for r in records if r["event"] == "train"]
    val = [r for r in records if r["event"] == "validation"][-1]
    rate = sum(r["images_per_s"] for r in train) / len(train)
    minutes = train[-1]["step"] * 128 / rate / 60
    print(f"| {name} | {train[-1]['step']} | {rate:.0f} | {minutes:.1f} | "
          f"{100 * val['map@100']:.1f} % | {100 * val['map@100'] / minutes:.2f} |")
PY
