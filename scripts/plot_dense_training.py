"""Plot a dense-network run's loss and validation match accuracy from its train_log.jsonl.

    python scripts/plot_dense_training.py RUN_DIR [--out RUN_DIR/training.png]
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
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()
               if line]
    train = [r for r in records if r["event"] == "train"]
    val = [r for r in records if r["event"] == "val"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot([r["step"] for r in train], [r["loss"] for r in train], "b-")
    left.set_xlabel("step")
    left.set_title("InfoNCE over cells (both directions)")
    right.plot([r["step"] for r in val], [100 * r["match_accuracy"] for r in val], "k-o")
    right.set_xlabel("step")
    right.set_ylabel("val cells matched within 1 cell (%)")
    right.set_title("validation: unseen instances, stored images")
    figure.tight_layout()
    target = out or run_dir / "training.png"
    with atomic_path(target) as path:
        figure.savefig(path, format="png", dpi=90)
    click.echo(f"wrote {target}")


if __name__ == "__main__":
    main()
