#!/usr/bin/env bash
# Browser check of the serve page: start `blur-retrieval serve` on 127.0.0.1, open the page in
# headless Chromium, upload QUERY_IMAGE through the file input and save a full-page screenshot.
#
#   scripts/serve_screenshot.sh INDEX_DIR QUERY_IMAGE [OUT.png]   (default docs/figures/serve_page.png)
#
# Needs the serve extra, Debian's chromium (apt-get install -y chromium) and node + npm:
# playwright-core is installed from npm into $PLAYWRIGHT_DIR (no browser is downloaded; it
# drives /usr/bin/chromium). PYTHON (default python) and PORT (default 8765) can be set.
set -euo pipefail

index=${1:?usage: $0 INDEX_DIR QUERY_IMAGE [OUT.png]}
query=${2:?usage: $0 INDEX_DIR QUERY_IMAGE [OUT.png]}
out=${3:-docs/figures/serve_page.png}
python=${PYTHON:-python}
port=${PORT:-8765}
export PLAYWRIGHT_DIR=${PLAYWRIGHT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/blur-retrieval/playwright}

if [ ! -d "$PLAYWRIGHT_DIR/node_modules/playwright-core" ]; then
  npm install --prefix "$PLAYWRIGHT_DIR" --no-audit --no-fund playwright-core >/dev/null
fi

work=$(mktemp -d)
"$python" -m benchmark.commands serve "$index" --host 127.0.0.1 --port "$port" --device cpu \
  >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 120); do
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/server.log" >&2; exit 1; fi
  sleep 0.5
done

mkdir -p "$(dirname "$out")" "$work/profile"
node "$(dirname "$0")/serve_screenshot.cjs" "http://127.0.0.1:$port/" "$query" "$out" "$work/profile"
