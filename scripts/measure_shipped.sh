#!/usr/bin/env bash
# The measurements docs/results.md quotes for the shipped checkpoints, rerun after they change
# (scripts/train_shipped.sh), in the order one depends on the other, into docs/figures/.
#
#   bash scripts/measure_shipped.sh                      # every stage but the 100k table
#   STAGES="test demo" bash scripts/measure_shipped.sh   # some of them
#   STAGES=100k bash scripts/measure_shipped.sh          # about an hour on the 2-core CPU
#   ENGINE_ARGS="--engine ray" STAGES=100k bash scripts/measure_shipped.sh   # on Ray (README
#                                                        # "Scale out"): 1.5x on these 2 cores
#   METHODS=blur-aware-no-be STAGES="test 100k" bash scripts/measure_shipped.sh   # after only
#                                                        # one model changed: its rows and grids
#                                                        # replace its old ones in the published
#                                                        # reports, the others' stay (`bench
#                                                        # merge`); rerank10k measures all four
#                                                        # when blur-aware is among METHODS, since
#                                                        # re-ranking uses blur-aware for all
#
# Stages: test (mAP@100 of the four on the test split, no distractors), tune (re-ranking
# parameters chosen on val with the new locator, written to the dense checkpoint's dense.json),
# rerank10k (test split among 10,000 distractors, with and without --rerank 50), latency (cost
# per query), figure (the inlier picture), demo, footage (the photo-footage benchmark: 196 test
# instances dressed in held-out photographs and filmed as slow-motion video, made into FOOTAGE
# first if it is not there, about 11 minutes here; needs the photos and video extras), 100k (test
# split among 100,000 distractors), rerank100k (the same with and without --rerank 50, for
# METHODS only even when blur-aware is among them: one model took 16 minutes on Ray here; not in
# the default STAGES).
# Each stage's wall time and peak memory go to RUNS/<stage>.time, its output to RUNS/<stage>.out.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/blur-retrieval}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data/small}
RUNS=${RUNS:-runs/measure}
REPORTS=${REPORTS:-docs/figures}
STAGES=${STAGES:-test tune rerank10k latency figure demo footage}
FOOTAGE=${FOOTAGE:-data/photo-footage}  # its videos; the benchmark set goes to FOOTAGE-set
ALL_METHODS=blur-aware,standard,sharp-only,blur-aware-no-be
METHODS=${METHODS:-$ALL_METHODS}
RERANK_METHODS=$METHODS  # re-ranking's mirror term uses blur-aware: its change moves every row
[[ ",$METHODS," == *,blur-aware,* ]] && RERANK_METHODS=$ALL_METHODS
read -r -a ENGINE <<< "${ENGINE_ARGS:-}"  # added to every bench map, e.g. --engine ray

# shellcheck source=scripts/lib/require.sh
. scripts/lib/require.sh
if [[ " $STAGES " == *" footage "* && ! -f $FOOTAGE-set/manifest.parquet ]]; then
  require_modules "$PYTHON" photos skimage  # checked now, not after the stages before it
  require_modules "$PYTHON" video av
fi
mkdir -p "$RUNS"
[ -f "$DATA/manifest.parquet" ] || $BIN synth "$DATA" --preset small --splits val,test -q

timed() {  # timed STAGE COMMAND...: run it, keep its output and its /usr/bin/time record
  local stage=$1
  shift
  /usr/bin/time -v -o "$RUNS/$stage.time" "$@" > "$RUNS/$stage.out" 2>&1
  grep -E "Elapsed|Maximum resident" "$RUNS/$stage.time" | sed "s/^/$stage: /"
}

holds_others() {  # holds_others REPORT_DIR METHODS: whether the report has a method not in METHODS
  "$PYTHON" - "$1/report.json" "$2" <<'PY'
import json, sys
names = {method["name"] for method in json.load(open(sys.argv[1]))["config"]["methods"]}
sys.exit(0 if names - set(sys.argv[2].split(",")) else 1)
PY
}

publish() {  # publish METHODS RUN_DIR REPORT_DIR [GRID...]: the report files of a bench map
  # run of METHODS, with every retrieval grid or only the named ones (the re-ranking run's grids
  # would add 19 MB); merged into the published report when that holds other methods to keep,
  # else replacing it (a merge refuses runs with other re-ranking parameters, as after `tune`)
  local methods=$1 run=$2 report=$3 staged=$2/published
  shift 3
  rm -rf "$staged"
  mkdir -p "$staged"
  cp "$run"/report.md "$run"/report.json "$run"/map_by_blur_level.png "$staged"/
  if [ -d "$run/grids" ] && [ $# = 0 ]; then cp -r "$run/grids" "$staged"/; fi
  if [ -d "$run/grids" ] && [ $# != 0 ]; then
    mkdir -p "$staged/grids"
    for grid in "$@"; do  # a grid of a method not in METHODS is left out
      [ ! -f "$run/grids/$grid" ] || cp "$run/grids/$grid" "$staged/grids/"
    done
  fi
  if [ -f "$report/report.json" ] && holds_others "$report" "$methods"; then
    $BIN bench merge "$report" "$staged" --out "$report" > /dev/null
  else
    rm -rf "$report"
    cp -r "$staged" "$report"
  fi
}

for stage in $STAGES; do
  case $stage in
    test)
      timed test $BIN bench map --data "$DATA" --distractors 0 --methods "$METHODS" \
        --out "$RUNS/map-small" "${ENGINE[@]}" -q
      publish "$METHODS" "$RUNS/map-small" "$REPORTS/map_small_test" ;;
    tune)
      timed tune $PYTHON scripts/tune_rerank.py "$DATA" --k 50 --distractors 10000 \
        --report retrieval/checkpoints/dense/tune_rerank.json \
        --write retrieval/checkpoints/dense/dense.json ;;
    rerank10k)
      timed rerank10k $BIN bench map --data "$DATA" --distractors 10000 \
        --methods "$RERANK_METHODS" --out "$RUNS/rerank-10k" --rerank 50 "${ENGINE[@]}" -q
      publish "$RERANK_METHODS" "$RUNS/rerank-10k" "$REPORTS/rerank_small_10k" level5_blur-aware.png \
        level5_blur-aware_rerank50.png level6_blur-aware.png level6_blur-aware_rerank50.png ;;
    latency)
      timed latency $PYTHON scripts/rerank_latency.py "$DATA" --json "$REPORTS/rerank_latency.json" ;;
    figure)
      timed figure $PYTHON scripts/rerank_figure.py "$DATA" --out "$REPORTS/rerank_matches.png" ;;
    demo)
      timed demo $BIN demo --out "$RUNS/demo" -q
      cp "$RUNS/demo/demo_queries.png" "$REPORTS/demo_queries.png"
      cp "$RUNS/demo/report/map_by_blur_level.png" "$REPORTS/demo_map_by_blur_level.png" ;;
    footage)
      if [ ! -f "$FOOTAGE-set/manifest.parquet" ]; then
        timed footage-videos $PYTHON scripts/photo_footage.py --out "$FOOTAGE"
        timed footage-set $BIN video-set "$FOOTAGE"/*.mkv --out "$FOOTAGE-set" --max-frames 25
      fi
      timed footage $BIN bench map --data "$FOOTAGE-set" --methods "$METHODS" --factory exact \
        --out "$RUNS/footage" -q
      publish "$METHODS" "$RUNS/footage" "$REPORTS/footage_shipped" level6_blur-aware.png \
        level6_standard.png ;;
    100k)
      timed 100k $BIN bench map --data "$DATA" --distractors 100000 --methods "$METHODS" \
        --out "$RUNS/map-100k" "${ENGINE[@]}" -q
      publish "$METHODS" "$RUNS/map-100k" "$REPORTS/map_small_100k" ;;
    rerank100k)
      timed rerank100k $BIN bench map --data "$DATA" --distractors 100000 --methods "$METHODS" \
        --out "$RUNS/rerank-100k" --rerank 50 "${ENGINE[@]}" -q
      publish "$METHODS" "$RUNS/rerank-100k" "$REPORTS/rerank_small_100k" level6_blur-aware.png \
        level6_blur-aware_rerank50.png ;;
    *)
      echo "unknown stage '$stage'; stages: test tune rerank10k latency figure demo footage 100k" \
        "rerank100k" >&2
      exit 2 ;;
  esac
done
