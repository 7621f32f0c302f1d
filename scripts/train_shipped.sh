#!/usr/bin/env bash
# Recipe of the shipped checkpoints (retrieval/checkpoints/<name>): blur-aware, standard,
# sharp-only, and the ablation blur-aware-no-be (blur-aware without the blur head and L_be).
# Its defaults, the hour budget (below), made the checkpoints shipped now. blur-aware was kept, as
# the script does now, by validation mAP@100 among VAL_DISTRACTORS (10,000) virtual distractors,
# the regime the 100,000-distractor benchmark measures; the other three were kept by validation
# without distractors (VAL_DISTRACTORS=0; each validation among them costs about a minute more
# here, nine per crop-head model). The ones shipped before them had 1,500
# steps each in float32 (PRECISION=fp32 EPOCHS=3 STEPS=500, see CHANGELOG.md).
#
# Data: the `small` preset. Models train on its 1,120 train instances as a composite stream
# (object layers over backgrounds drawn independently of the instance, rendered once into
# DATA/train_layers) and are kept by validation mAP@100 on its val instances; the test
# instances `bench map` evaluates on are never seen. All four get the same data, batch,
# optimiser, schedule, precision and hard negatives (the closest other-instance images of the
# batch as the contrastive negatives), and the same budget: the steps that fit, by their per-step
# rates, in about 50 minutes of the 2-core CPU alone in bfloat16 (the shipped runs took 53-57 min
# beside light other work, validations included). The three crop-head models run 0.67 s per step there, so 9 x 500
# steps; `standard`, whose global head runs the backbone on the whole 96x128 image, 1.34 s per
# step, so 4 x 550. EPOCHS and STEPS, when set, give every model the same steps instead.
#
#   bash scripts/train_shipped.sh                     # CPU, one after the other, resumable
#   DEVICE=cuda WORKERS=3 PARALLEL=1 bash scripts/train_shipped.sh   # GPU machine, side by side
#   (side by side, build the layer bank first: run one model alone, or let each build its own)
#   EPOCHS=3 STEPS=500 MODELS=blur-aware bash scripts/train_shipped.sh   # another budget
#
# Each invocation of a model appends its wall time to RUNS/times.txt.
# An interrupted run continues where its last saved state left it when the script is rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/blur-retrieval}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data/small}
RUNS=${RUNS:-runs/shipped}
EPOCHS=${EPOCHS:-}
STEPS=${STEPS:-}
DEVICE=${DEVICE:-cpu}
PRECISION=${PRECISION:-bf16}
WORKERS=${WORKERS:-0}
PARALLEL=${PARALLEL:-0}
VAL_DISTRACTORS=${VAL_DISTRACTORS:-10000}
MODELS=${MODELS:-blur-aware standard sharp-only blur-aware-no-be}
DEST=${DEST:-retrieval/checkpoints}

# Classification weight: blur-aware was retrained with the published 0.1, which beat 1 side by
# side (scripts/compare_recipes.sh, docs/results.md "Training against look-alikes"); the other
# three are still the checkpoints trained with 1 and get 0.1 when they are retrained.
declare -A ARGS=(
  [blur-aware]="--method blur-aware --cls-weight 0.1"
  [standard]="--method standard --cls-weight 1"
  [sharp-only]="--method sharp-only --cls-weight 1"
  [blur-aware-no-be]="--method blur-aware --losses con,cls,loc --cls-weight 1"
)
declare -A BUDGET=(  # epochs x steps per epoch (a validation after each epoch)
  [blur-aware]="9 500"
  [standard]="4 550"
  [sharp-only]="9 500"
  [blur-aware-no-be]="9 500"
)
COMMON=(--batch 32,4 --lr 2e-3 --schedule cosine
        --cls-margin 0 --cls-scale 16 --hard-negatives --max-val-queries 1000 --seed 0
        --checkpoint-every 250 --device "$DEVICE" --precision "$PRECISION" --workers "$WORKERS"
        --val-distractors "$VAL_DISTRACTORS" -q)

mkdir -p "$RUNS"
[ -f "$DATA/manifest.parquet" ] || $BIN synth "$DATA" --preset small --splits val,test -q

train_one() {
  local name=$1 resume=() started=$SECONDS epochs steps
  read -r epochs steps <<< "${BUDGET[$name]}"
  [ -f "$RUNS/$name/train_state.pt" ] && resume=(--resume)
  # shellcheck disable=SC2086
  $BIN train "$DATA" --out "$RUNS/$name" ${ARGS[$name]} --epochs "${EPOCHS:-$epochs}" \
    --steps-per-epoch "${STEPS:-$steps}" "${COMMON[@]}" "${resume[@]}" >> "$RUNS/$name.out" 2>&1
  # One line per invocation (a resumed run has several): how long this one took.
  echo "$(date -u +%FT%TZ) $name ${resume[*]:-fresh} $((SECONDS - started)) s" >> "$RUNS/times.txt"
}

for name in $MODELS; do   # the first run builds DATA/train_layers; the others reuse it
  if [ "$PARALLEL" = 1 ]; then train_one "$name" & else train_one "$name"; fi
done
wait

for name in $MODELS; do
  dest=$DEST/$name
  mkdir -p "$dest"
  cp "$RUNS/$name/model.safetensors" "$RUNS/$name/config.json" "$RUNS/$name/train_log.jsonl" "$dest/"
  $PYTHON scripts/plot_training.py "$RUNS/$name" --out "$dest/training.png"
done
