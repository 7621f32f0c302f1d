#!/usr/bin/env bash
# Recipe of the shipped checkpoints (retrieval/checkpoints/<name>): blur-aware, standard,
# sharp-only, and the ablation blur-aware-no-be (blur-aware without the blur head and L_be).
# Three stages, each resumable, into RUNS/<name>, RUNS/<name>-photos and RUNS/<name>-polish<N>:
#
# base    from scratch on the simulator's procedural paint, about 50 minutes of the 2-core CPU
#         alone in bfloat16 per model. The three crop-head models run 0.67 s per step there, so
#         9 x 500 steps; `standard`, whose global head runs the backbone on the whole 96x128
#         image, 1.34 s per step, so 4 x 550. (PRECISION defaults to bfloat16 on CUDA and on
#         CPUs that compute it natively, float32 on others, where emulated bfloat16 ran 12x
#         slower; scripts/lib/precision.sh. With 256-d vectors, 64 x 2 batches and a validation
#         among 10,000 distractors after each epoch, the bases took 54-58 min on a 2-core CPU
#         with AVX512-BF16 and no AMX: blur-aware 54, standard 58, blur-aware-no-be 56,
#         sharp-only 54.)
#         Kept by validation mAP@100 among VAL_DISTRACTORS (10,000) virtual distractors, the
#         regime the 100,000-distractor benchmark measures (each validation among them costs
#         about a minute).
# photos  fine-tuned from the base checkpoint (train --init-from) at a quarter of the learning
#         rate, with a quarter of the training objects and backgrounds dressed in photographs
#         (PHOTOS, scikit-image's ten train photos; its five held-out ones dress the footage
#         benchmark, scripts/photo_footage.py), so the models learn shapes and not only the
#         simulator's paint (docs/results.md "Transfer to photographs"). 6 x 500 steps, 6 x 275
#         for standard, 36-42 minutes each. Kept by the same validation.
#
# polish  more photo-stage cycles, each from the one before (the first from the photos stage):
#         6 x 500 steps (6 x 275 for standard) at an eighth of the base learning rate, seed = the
#         cycle's number; how many cycles is BUDGET's last column (blur-aware, blur-aware-no-be
#         and standard 3, 37-47 min each). Kept by the same validation. sharp-only gets none:
#         with 32 x 4 batches its three cycles left its validation below its photo stage's
#         (10.30; 10.00, 9.95, 10.07), so the stage does nothing for it and its photo stage ships.
#
# The last stage in STAGES is copied into DEST. A shipped checkpoint's config.json names the
# weights it started from (init_from, init_fingerprint); the logs of the stages before it are
# shipped beside its own train_log.jsonl as STAGE_train_log.jsonl (base_, photos_, polish1_).
#
# Data: the `small` preset. Models train on its 1,120 train instances as a composite stream
# (object layers over backgrounds drawn independently of the instance, rendered once into
# DATA/train_layers, and DATA/train_layers-photos-<hash> for the photos stage) and are kept by
# validation mAP@100 on its val instances; the test instances `bench map` evaluates on are never
# seen. All four get the same data, batch, optimiser, schedule, precision and hard negatives (the
# closest other-instance images of the batch as the contrastive negatives), and the same budget.
# EPOCHS and STEPS, when set, give every model the same base steps instead.
#
#   bash scripts/train_shipped.sh                     # CPU, one after the other, resumable
#   STAGES=photos BASE=runs/base MODELS=standard bash scripts/train_shipped.sh   # fine-tune only,
#                                                     # from the base checkpoints in runs/base
#   STAGES=polish PHOTO_RUNS=runs/shipped MODELS=blur-aware bash scripts/train_shipped.sh
#                                                     # polish only, from runs/shipped/blur-aware-photos
#   DEVICE=cuda WORKERS=3 PARALLEL=1 bash scripts/train_shipped.sh   # GPU machine, side by side
#   EMBEDDING_DIM=128 bash scripts/train_shipped.sh   # 128-d vectors for all four (256 by default)
#   BATCH=32,4 RUNS=runs/ship32 DEST=runs/ship32-dest bash scripts/train_shipped.sh
#                                                     # the batch of the models shipped before
#   (side by side, build the layer banks first: run one model alone, or let each build its own)
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
WORKERS=${WORKERS:-0}
PARALLEL=${PARALLEL:-0}
VAL_DISTRACTORS=${VAL_DISTRACTORS:-10000}
MODELS=${MODELS:-blur-aware standard sharp-only blur-aware-no-be}
DEST=${DEST:-retrieval/checkpoints}
STAGES=${STAGES:-base photos polish}
BASE=${BASE:-$RUNS}  # where the photos stage finds RUNS/<name> of the base stage
PHOTO_RUNS=${PHOTO_RUNS:-$RUNS}  # where the polish stage finds RUNS/<name>-photos
PHOTOS=${PHOTOS:-skimage}
PHOTO_SHARE=${PHOTO_SHARE:-0.25}
# instances x images of each a batch (train --batch): 64 x 2 led 32 x 4 by 4 points on
# validation among 10,000 at 3,000 steps, and the four trained through all stages with it led
# those trained with 32 x 4 on the test split (docs/results.md "Training against look-alikes")
BATCH=${BATCH:-64,2}
# shellcheck source=scripts/lib/precision.sh
. scripts/lib/precision.sh
PRECISION=${PRECISION:-$(fast_precision "$DEVICE" "$PYTHON")}  # bf16 where native, else fp32

declare -A ARGS=(
  [blur-aware]="--method blur-aware"
  [standard]="--method standard"
  [sharp-only]="--method sharp-only"
  [blur-aware-no-be]="--method blur-aware --losses con,cls,loc"
)
# epochs x steps per epoch (a validation after each epoch) of the base stage, then of the photos
# stage and of each polish cycle; then the number of polish cycles
declare -A BUDGET=(
  [blur-aware]="9 500 6 500 3"
  [standard]="4 550 6 275 3"
  [sharp-only]="9 500 6 500 0"
  [blur-aware-no-be]="9 500 6 500 3"
)
# One recipe for all four, so they differ only by the method (or, for the ablation
# blur-aware-no-be, by L_be); each was chosen side by side (scripts/compare_recipes.sh,
# docs/results.md "Training against look-alikes"):
# - classification weight 0.1 (the published weight), which beat 1, in both stages;
# - 256-d vectors, which led 128-d ones at 1,000 steps and at the hour scale on validation
#   among distractors at the same cost per step (EMBEDDING_DIM, when set, overrides it);
# - contrastive margin 1.2 (train --con-margin: a cosine below 0.28 for a negative to cost
#   nothing), which led the published 0.7 there.
COMMON=(--batch "$BATCH" --schedule cosine --cls-weight 0.1 --embedding-dim "${EMBEDDING_DIM:-256}"
        --con-margin 1.2 --cls-margin 0 --cls-scale 16 --hard-negatives --max-val-queries 1000
        --checkpoint-every 250 --device "$DEVICE" --precision "$PRECISION"
        --workers "$WORKERS" --val-distractors "$VAL_DISTRACTORS" -q)

for stage in $STAGES; do
  case $stage in base|photos|polish) ;; *) echo "STAGES: unknown stage '$stage' (base, photos, polish)" >&2; exit 2 ;; esac
done
# shellcheck source=scripts/lib/require.sh
. scripts/lib/require.sh
# shellcheck source=scripts/lib/peak_rss.sh
. scripts/lib/peak_rss.sh
# both photo stages need scikit-image's photographs: checked now, not after the data
if [[ ( " $STAGES " == *" photos "* || " $STAGES " == *" polish "* ) && $PHOTOS == skimage ]]; then
  require_modules "$PYTHON" photos skimage
fi
mkdir -p "$RUNS"
[ -f "$DATA/manifest.parquet" ] || $BIN synth "$DATA" --preset small --splits val,test -q

polish_cycles() {  # polish_cycles NAME: how many polish cycles NAME gets
  local fields
  read -r -a fields <<< "${BUDGET[$1]}"
  echo "${fields[4]}"
}

run_dir() {  # run_dir NAME STAGE [CYCLE]: the run folder of a stage (polish: of CYCLE, or the last)
  case $2 in
    base) echo "$RUNS/$1" ;;
    photos) echo "$RUNS/$1-photos" ;;
    polish) echo "$RUNS/$1-polish${3:-$(polish_cycles "$1")}" ;;
  esac
}

train_one() {  # train_one NAME STAGE [CYCLE]
  local name=$1 stage=$2 cycle=${3:-} resume=() started=$SECONDS epochs steps stage_args out
  local base_epochs base_steps fine_epochs fine_steps from seed=0
  local photo_args=(--photos "$PHOTOS" --photo-share "$PHOTO_SHARE")
  read -r base_epochs base_steps fine_epochs fine_steps _ <<< "${BUDGET[$name]}"
  out=$(run_dir "$name" "$stage" "$cycle")
  case $stage in
    base)
      epochs=${EPOCHS:-$base_epochs} steps=${STEPS:-$base_steps}
      stage_args=(--lr 2e-3) ;;
    photos)
      epochs=$fine_epochs steps=$fine_steps
      stage_args=(--lr 5e-4 --init-from "$BASE/$name" "${photo_args[@]}") ;;
    polish)
      from=$PHOTO_RUNS/$name-photos
      [ "$cycle" -gt 1 ] && from=$(run_dir "$name" polish $((cycle - 1)))
      epochs=$fine_epochs steps=$fine_steps seed=$cycle
      stage_args=(--lr 2.5e-4 --init-from "$from" "${photo_args[@]}") ;;
  esac
  [ -f "$out/train_state.pt" ] && resume=(--resume)
  # shellcheck disable=SC2086
  /usr/bin/time -v $BIN train "$DATA" --out "$out" ${ARGS[$name]} --epochs "$epochs" \
    --steps-per-epoch "$steps" "${stage_args[@]}" "${COMMON[@]}" --seed "$seed" "${resume[@]}" \
    >> "$out.out" 2>&1
  # One line per invocation (a resumed run has several): how long it took, its peak memory.
  echo "$(date -u +%FT%TZ) $name $stage$cycle ${resume[*]:-fresh} $((SECONDS - started)) s" \
    "peak RSS $(peak_rss_kb "$out.out") kB" >> "$RUNS/times.txt"
}

train_stages() {  # train_stages NAME: its stages in order
  local stage cycle cycles
  cycles=$(polish_cycles "$1")
  for stage in $STAGES; do
    if [ "$stage" = polish ]; then
      for ((cycle = 1; cycle <= cycles; cycle++)); do train_one "$1" polish "$cycle"; done
    else
      train_one "$1" "$stage"
    fi
  done
}

for name in $MODELS; do   # the first run builds the layer banks; the others reuse them
  if [ "$PARALLEL" = 1 ]; then train_stages "$name" & else train_stages "$name"; fi
done
wait

for name in $MODELS; do
  last_stage=
  cycles=$(polish_cycles "$name")
  for stage in $STAGES; do  # a polish stage of no cycles leaves the stage before it last
    [ "$stage" = polish ] && [ "$cycles" = 0 ] || last_stage=$stage
  done
  [ -n "$last_stage" ] || continue
  run=$(run_dir "$name" "$last_stage")
  dest=$DEST/$name
  mkdir -p "$dest"
  cp "$run/model.safetensors" "$run/config.json" "$run/train_log.jsonl" "$dest/"
  rm -f "$dest"/*_train_log.jsonl
  # the logs of the stages the shipped weights grew from, found where each stage read them
  [ "$last_stage" = base ] || cp "$BASE/$name/train_log.jsonl" "$dest/base_train_log.jsonl"
  if [ "$last_stage" = polish ]; then
    cp "$PHOTO_RUNS/$name-photos/train_log.jsonl" "$dest/photos_train_log.jsonl"
    for ((cycle = 1; cycle < cycles; cycle++)); do
      cp "$(run_dir "$name" polish "$cycle")/train_log.jsonl" "$dest/polish${cycle}_train_log.jsonl"
    done
  fi
  $PYTHON scripts/plot_training.py "$run" --out "$dest/training.png"
done
