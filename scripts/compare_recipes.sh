#!/usr/bin/env bash
# Training recipes side by side at equal budget: every recipe gets the shipped `blur-aware`
# settings (scripts/train_shipped.sh) and the same steps, and is validated among 10,000 virtual
# distractors (the regime the benchmark's 100,000 stresses). Their per-step costs are the same
# to within a few per cent (the steps' images/s are in each train_log.jsonl), so equal steps are
# equal time; `scripts/recipe_table.py RUNS` prints the comparison.
#
#   bash scripts/compare_recipes.sh                              # 2 x 500 steps each, CPU
#   EPOCHS=4 STEPS=500 RECIPES="base wide-lookalike" bash scripts/compare_recipes.sh
#   RECIPES="base detach-blur no-be" bash scripts/compare_recipes.sh   # the blur branch
# The descriptor-stages recipe (stages4) lives on branch exp (commit e5f8b3c), where that option is.
#
# Resumable: a rerun continues unfinished runs and skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/train_recipe.sh
. scripts/lib/train_recipe.sh
RUNS=${RUNS:-runs/recipes}
EPOCHS=${EPOCHS:-2}
SEED=${SEED:-0}  # another seed, into other RUNS, shows what one seed moves
STEPS=${STEPS:-500}
DEVICE=${DEVICE:-cpu}
VAL_DISTRACTORS=${VAL_DISTRACTORS:-10000}
# shellcheck source=scripts/lib/precision.sh
. scripts/lib/precision.sh
PRECISION=${PRECISION:-$(fast_precision "$DEVICE" "$PYTHON")}  # bf16 where native, else fp32
RECIPES=${RECIPES:-base lookalike wide wide-lookalike wide-lookalike-memory}

WIDE="--train-instances 200 --train-trajectories 3"  # 140 train instances per category
declare -A ARGS=(  # after COMMON on the command line, so a recipe's option overrides a common one
  [base]=""
  [lookalike]="--lookalikes 4"
  [memory]="--memory 4096"
  [detach-blur]="--detach-blur"
  [no-be]="--losses con,cls,loc"
  [wide]="$WIDE"
  [wide-lookalike]="$WIDE --lookalikes 4"
  [wide-lookalike-memory]="$WIDE --lookalikes 4 --memory 4096"
  [wider-lookalike]="--train-instances 400 --train-trajectories 2 --lookalikes 4"
  [cls0.1]="--cls-weight 0.1"         # the published classification weight
  [wide-cls0.1]="$WIDE --cls-weight 0.1"
  [wide-memory-cls0.1]="$WIDE --memory 4096 --cls-weight 0.1"
  [no-be-cls0.1]="--losses con,cls,loc --cls-weight 0.1"   # the blur branch at the weight 0.1:
  [isolate-cls0.1]="--isolate-blur --cls-weight 0.1"        # L_be kept off the shared locator,
  [be0.1-cls0.1]="--be-weight 0.1 --cls-weight 0.1"         # or weighed 0.1,
  [blurcrop-cls0.1]="--blur-input crop --cls-weight 0.1"    # or read from the object's crop
  [photos-cls0.1]="--photos skimage --photo-share 0.5 --cls-weight 0.1"  # half in train photos
  [softmax-cls0.1]="--con-loss softmax --cls-weight 0.1"   # L_con as a softmax over the batch,
  [softmax0.05-cls0.1]="--con-loss softmax --con-temperature 0.05 --cls-weight 0.1"  # sharper,
  [softmax0.3-cls0.1]="--con-loss softmax --con-temperature 0.3 --cls-weight 0.1"  # smoother,
  [softmax0.5-cls0.1]="--con-loss softmax --con-temperature 0.5 --cls-weight 0.1"
  [dim256-cls0.1]="--embedding-dim 256 --cls-weight 0.1"  # room for more instances
  [dim512-cls0.1]="--embedding-dim 512 --cls-weight 0.1"
  [dim256-no-be-cls0.1]="--embedding-dim 256 --losses con,cls,loc --cls-weight 0.1"  # its ablation
  [dim256-m1.0-cls0.1]="--embedding-dim 256 --con-margin 1.0 --cls-weight 0.1"  # negatives kept
  [dim256-m1.2-cls0.1]="--embedding-dim 256 --con-margin 1.2 --cls-weight 0.1"  # farther apart
  [dim256-m1.4-cls0.1]="--embedding-dim 256 --con-margin 1.4 --cls-weight 0.1"  # to cosine 0.02
  [dim256-m1.2-spread1-cls0.1]="--embedding-dim 256 --con-margin 1.2 --spread-weight 1 --cls-weight 0.1"
  [dim256-m1.2-crop64-cls0.1]="--embedding-dim 256 --con-margin 1.2 --crop-size 64 --cls-weight 0.1"  # finer crops
  [dim256-m1.2-memory-cls0.1]="--embedding-dim 256 --con-margin 1.2 --memory 4096 --cls-weight 0.1"
  [dim256-m1.2-lookalike-cls0.1]="--embedding-dim 256 --con-margin 1.2 --lookalikes 4 --cls-weight 0.1"
  [dim256-m1.2-p64k2-cls0.1]="--embedding-dim 256 --con-margin 1.2 --batch 64,2 --cls-weight 0.1"  # more instances a batch
  [dim256-m1.2-p64k2-n15-cls0.1]="--embedding-dim 256 --con-margin 1.2 --batch 64,2 --con-negatives 15 --cls-weight 0.1"  # more hard negatives an anchor
  [dim256-m1.2-p64k2-n40-cls0.1]="--embedding-dim 256 --con-margin 1.2 --batch 64,2 --con-negatives 40 --cls-weight 0.1"
  [dim256-m1.2-p64k2-bal-cls0.1]="--embedding-dim 256 --con-margin 1.2 --batch 64,2 --con-loss balanced --cls-weight 0.1"  # the pull weighs as much as the pushes
  [dim256-m1.2-p64k2-clsm0.1-cls0.1]="--embedding-dim 256 --con-margin 1.2 --batch 64,2 --cls-margin 0.1 --cls-weight 0.1"  # a margin in the classifier
  [dim256-m1.2-p64k2-m-cls0.1]="--embedding-dim 256 --con-margin 1.2 --batch 64,2 --backbone plainnet_m --cls-weight 0.1"  # wider backbone: 1.77x the operations a step
  [dim256-m1.2-p64k2-lr4e-3-cls0.1]="--embedding-dim 256 --con-margin 1.2 --batch 64,2 --lr 4e-3 --cls-weight 0.1"  # twice the learning rate
  [dim256-m1.2-p128k2-cls0.1]="--embedding-dim 256 --con-margin 1.2 --batch 128,2 --cls-weight 0.1"  # twice the images a step: half the steps for equal images
  [dim256-softmax0.3-cls0.1]="--embedding-dim 256 --con-loss softmax --con-temperature 0.3 --cls-weight 0.1"
  [softmax-memory-cls0.1]="--con-loss softmax --memory 4096 --cls-weight 0.1"  # with the memory
  [con-cls]="--losses con,cls"        # the published loss ablation's rows (global head:
  [con-cls-be]="--losses con,cls,be"  # the crop head needs the localisation branch)
)
COMMON=(--method blur-aware --batch 32,4 --lr 2e-3 --schedule cosine --cls-weight 1
        --cls-margin 0 --cls-scale 16 --hard-negatives --max-val-queries 1000 --seed "$SEED"
        --precision "$PRECISION" --workers 0 --device "$DEVICE" --val-distractors "$VAL_DISTRACTORS"
        --epochs "$EPOCHS" --steps-per-epoch "$STEPS" --checkpoint-every 250 -q)

mkdir -p "$RUNS"
[ -f "$DATA/manifest.parquet" ] || $BIN synth "$DATA" --preset small --splits val,test -q
for name in $RECIPES; do
  [ -v "ARGS[$name]" ] || { echo "unknown recipe $name" >&2; exit 2; }
  train_recipe "$name" "$EPOCHS"
done
$PYTHON scripts/recipe_table.py "$RUNS" $RECIPES
