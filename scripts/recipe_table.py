"""Print the side-by-side table of training runs from their logs (scripts/compare_recipes.sh).

    python scripts/recipe_table.py runs/recipes base lookalike wide
    python scripts/recipe_table.py --curves runs/recipes-4500/cls0.1 runs/other/dim256-cls0.1

One row per run: its last validation (among distractors when the run had them, and without),
its best, the median logged training rate and the minutes its steps take at that rate (steps x
the images of a batch; validation and set-up excluded, so a resumed run is counted once).

`--curves RUN...` prints every validation of each run instead, with the minutes of training
steps that led to it (summed from the logged rates), so runs of different per-step cost, or from
different folders and machines, can be read at equal steps and at equal time.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BATCH_IMAGES = 128  # the 32 x 4 batch of scripts/compare_recipes.sh, for a log without its config


def _batch_images(run: Path) -> int:
    """Images a step: the run's config.json records its batch; a bare log gets BATCH_IMAGES."""
    config = run / "config.json"
    if not config.is_file():
        return BATCH_IMAGES
    instances, images = json.loads(config.read_text(encoding="utf-8"))["training"]["batch"]
    return instances * images


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


def _median_rate(records: list[dict]) -> float:
    rates = [r["images_per_s"] for r in records if r["event"] == "train"]
    return statistics.median(rates) if rates else 0.0


def _scores(validation: dict) -> tuple[str, str, str, str]:
    """All and BL6 among distractors, then all and BL6 without (the same when it had none)."""
    clean = validation.get("without_distractors", validation)
    return (_percent(validation["map@100"]), _percent(validation["per_level"].get("6")),
            _percent(clean["map@100"]), _percent(clean["per_level"].get("6")))


def row(run: Path) -> str:
    records = _records(run)
    validations = [r for r in records if r["event"] == "validation"]
    if not validations:
        return f"| {run.name} | no validation yet | | | | | | |"
    last = validations[-1]
    score, bl6, clean, clean_bl6 = _scores(last)
    best = max(v["map@100"] for v in validations)
    rate = _median_rate(records)
    steps = last["step"]
    images = steps * _batch_images(run)
    minutes = images / rate / 60 if rate else 0.0
    return (f"| {run.name} | {steps} | {score} | {bl6} | {_percent(best)} | {clean} "
            f"| {clean_bl6} | {rate:.0f} | {minutes:.1f} |")


def curve_rows(run: Path) -> list[str]:
    """One row per validation of `run`: epoch, step, cumulative step minutes, the scores."""
    records = _records(run)
    median = _median_rate(records)
    # step -> (steps the interval covers, images/s). The last record of a step wins, so steps a
    # resumed run repeats count once. The interval after a validation takes the median rate:
    # older logs counted the validation into it. So does the one after a start or a resume,
    # whose first steps warm up.
    rates: dict[int, tuple[int, float]] = {}
    previous, after_break = 0, True
    for record in records:
        if record["event"] == "train":
            rate = median if after_break else record["images_per_s"]
            rates[record["step"]] = (record["step"] - previous, rate)
            previous, after_break = record["step"], False
        else:
            previous, after_break = record.get("step", previous), True
    rows, batch_images = [], _batch_images(run)
    for validation in (r for r in records if r["event"] == "validation"):
        seconds = sum(steps * batch_images / rate for step, (steps, rate) in rates.items()
                      if step <= validation["step"] and rate > 0)
        rows.append(f"| {run.name} | {validation['epoch']} | {validation['step']} "
                    f"| {seconds / 60:.1f} | " + " | ".join(_scores(validation)) + " |")
    return rows


def print_curves(runs: list[Path]) -> None:
    print("| run | epoch | step | step minutes | val mAP@100 among distractors | BL6 "
          "| without distractors | BL6 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        if not (run / "train_log.jsonl").is_file():
            print(f"| {run.name} | not run | | | | | | |")
            continue
        for line in curve_rows(run):
            print(line)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "--curves":
        print_curves([Path(arg) for arg in argv[2:]])
        return 0
    if len(argv) < 2 or argv[1].startswith("--"):
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
