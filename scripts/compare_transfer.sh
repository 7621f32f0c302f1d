#!/usr/bin/env bash
# Does training on photographs make the shipped models transfer? Each shipped model is fine-tuned
# (train --init-from) for the same steps with half of its training objects and backgrounds dressed
# in scikit-image's train photos (--photos) and, as the control, without them, so a gain cannot
# come from the extra steps alone. All are then measured on the held-out-photo footage set
# (scripts/photo_footage.py + video-set: objects and scenes made of photos no run trained on) and
# on the simulator's test split, beside the shipped checkpoints.
#
#   .venv/bin/pip install -e '.[photos,video]'
#   bash scripts/compare_transfer.sh                  # about 45 min on 2 cores
#   RECIPES="ba-photos" bash scripts/compare_transfer.sh
#   EPOCHS=6 RUNS=runs/transfer-3000 RECIPES="ba-photos" bash scripts/compare_transfer.sh   # longer
#
# Equal time: per epoch the crop-head blur-aware runs 500 steps, the global-head standard (2x the
# cost per step) 275; EPOCHS (2) epochs each. Resumable: a rerun continues unfinished runs and
# skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/train_recipe.sh
. scripts/lib/train_recipe.sh
FOOTAGE=${FOOTAGE:-data/photo-footage}
RUNS=${RUNS:-runs/transfer}
PHOTOS=${PHOTOS:-skimage}
SHARE=${SHARE:-0.5}
RECIPES=${RECIPES:-ba-photos ba-plain std-photos}
EPOCHS=${EPOCHS:-2}
# shellcheck source=scripts/lib/precision.sh
. scripts/lib/precision.sh
PRECISION=${PRECISION:-$(fast_precision cpu "$PYTHON")}  # bf16 where native, else fp32

BLUR_AWARE="--init-from blur-aware --method blur-aware --cls-weight 0.1 --epochs $EPOCHS --steps-per-epoch 500"
STANDARD="--init-from standard --method standard --cls-weight 1 --epochs $EPOCHS --steps-per-epoch 275"
declare -A ARGS=(
  [ba-photos]="$BLUR_AWARE --photos $PHOTOS --photo-share $SHARE"
  [ba-photos25]="$BLUR_AWARE --photos $PHOTOS --photo-share 0.25"
  [ba-plain]="$BLUR_AWARE"
  [std-photos]="$STANDARD --photos $PHOTOS --photo-share $SHARE"
  [std-photos25]="$STANDARD --photos $PHOTOS --photo-share 0.25"
  [std-plain]="$STANDARD"
)
COMMON=(--batch 32,4 --lr 5e-4 --schedule cosine --cls-margin 0 --cls-scale 16 --hard-negatives
        --max-val-queries 1000 --seed 0 --checkpoint-every 250 --device cpu --precision "$PRECISION"
        --workers 0 --val-distractors 10000 -q)

mkdir -p "$RUNS"
[ -f "$DATA/manifest.parquet" ] || $BIN synth "$DATA" --preset small --splits val,test -q
if [ ! -f "$FOOTAGE-set/manifest.parquet" ]; then
  $PYTHON scripts/photo_footage.py --out "$FOOTAGE" --photos "$PHOTOS"
  $BIN video-set "$FOOTAGE"/*.mkv --out "$FOOTAGE-set" --max-frames 25 -q
fi
methods=blur-aware,standard
for name in $RECIPES; do
  [ -v "ARGS[$name]" ] || { echo "unknown recipe $name" >&2; exit 2; }
  methods=$methods,$RUNS/$name
  train_recipe "$name" "$EPOCHS"
done
$BIN bench map --data "$FOOTAGE-set" --methods "$methods" --factory exact --out "$RUNS/footage" -q
$BIN bench map --data "$DATA" --distractors 0 --methods "$methods" --factory exact --out "$RUNS/test" -q
