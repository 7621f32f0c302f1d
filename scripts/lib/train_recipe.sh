# Sourced by the comparison scripts: their common defaults, and one named recipe trained
# resumably and timed.
BIN=${BIN:-.venv/bin/blur-retrieval}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data/small}
# shellcheck source=scripts/lib/peak_rss.sh
. scripts/lib/peak_rss.sh
#
# train_recipe NAME EPOCHS trains the caller's ARGS[NAME] after its COMMON options into
# $RUNS/NAME with $BIN and $DATA, unless the run's log already shows epoch EPOCHS finished;
# a saved state is resumed. Output goes to $RUNS/NAME.out (with /usr/bin/time -v's wall time
# and peak memory) and one line per invocation, with its wall time and peak memory, to
# $RUNS/times.txt.
train_recipe() {
  local name=$1 epochs=$2 resume=() started=$SECONDS
  local out=$RUNS/$name
  if grep -qs '"epoch": '"$epochs"',' "$out/train_log.jsonl" && [ -f "$out/config.json" ]; then
    return 0  # finished
  fi
  if [ -f "$out/train_state.pt" ]; then resume=(--resume); fi
  # shellcheck disable=SC2086
  /usr/bin/time -v $BIN train "$DATA" --out "$out" "${COMMON[@]}" ${ARGS[$name]} "${resume[@]}" \
    >> "$RUNS/$name.out" 2>&1
  echo "$(date -u +%FT%TZ) $name ${resume[*]:-fresh} $((SECONDS - started)) s" \
    "peak RSS $(peak_rss_kb "$RUNS/$name.out") kB" >> "$RUNS/times.txt"
}
