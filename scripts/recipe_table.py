"""Print the side-by-side table of training runs from their logs (scripts/compare_recipes.sh).

    python scripts/recipe_table.py runs/recipes base lookalike wide

One row per run: its last validation (among distractors when the run had them, and without),
its best, the median logged training rate and the minutes its steps take at that rate (steps x
BATCH_IMAGES images; validation and set-up excluded, so a resumed run is counted once).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BATCH_IMAGES = 128  # the 32 x 4 batch of scripts/compare_recipes.sh (the logs do not record it)


def _records(run: Path) -> list[dict]:
    records = []
    for line in (run / "train_log.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    return records


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def row(run: Path) -> str:
    records = _records(run)
    validations = [r for r in records if r["event"] == "validation"]
    train = [r for r in records if r["event"] == "train"]
    if not validations:
        return f"| {run.name} | no validation yet | | | | | | |"
    last = validations[-1]
    clean = last.get("without_distractors", last)
    best = max(v["map@100"] for v in validations)
    rate = statistics.median(r["images_per_s"] for r in train) if train else 0.0
    steps = last["step"]
    images = steps * BATCH_IMAGES
    minutes = images / rate / 60 if rate else 0.0
    return (f"| {run.name} | {steps} | {_percent(last['map@100'])} "
            f"| {_percent(last['per_level'].get('6'))} | {_percent(best)} "
            f"| {_percent(clean['map@100'])} | {_percent(clean['per_level'].get('6'))} "
            f"| {rate:.0f} | {minutes:.1f} |")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    names = argv[2:] or sorted(p.name for p in root.iterdir() if (p / "train_log.jsonl").is_file())
    print("| run | steps | val mAP@100 among distractors | BL6 | best | without distractors "
          "| BL6 | train img/s (median) | step minutes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        run = root / name
        print(row(run) if (run / "train_log.jsonl").is_file() else f"| {name} | not run | | | | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
