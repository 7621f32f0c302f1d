"""Plot a training run's loss parts and validation mAP from its train_log.jsonl.

    python scripts/plot_training.py RUN_DIR [--out RUN_DIR/training.png]
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from retrieval.fileio import atomic_path  # noqa: E402


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="PNG path.")
def main(run_dir: Path, out: Path | None) -> None:
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line]
    train = [r for r in records if r.get("event") == "train"]
    val = [r for r in records if r.get("event") == "validation"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for part in sorted({k for r in train for k in r["loss"]}):
        left.plot([r["step"] for r in train], [r["loss"].get(part) for r in train], label=part)
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_title("training losses (unweighted parts, weighted total)")
    left.legend()
    steps = [r["step"] for r in val]
    right.plot(steps, [100 * r["map@100"] for r in val], "k-o", label="all")
    for level in range(1, 7):
        values = [100 * (r["per_level"].get(str(level)) or 0) for r in val]
        right.plot(steps, values, ".--", label=f"BL{level}")
    right.set_xlabel("step")
    right.set_ylabel("validation mAP@100 (%)")
    right.set_title("validation")
    right.legend(fontsize=7)
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    out = out or run_dir / "training.png"
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
