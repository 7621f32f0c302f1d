"""`bench map` in one process and through a local Ray cluster, side by side on the same data.

Both runs embed the same items (queries, database and virtual distractors) with the same
models into fresh caches; the table gives each run's embedding time and rate, their ratio, and
the Ray run's rate per worker, which the projection to a cluster uses under a stated assumption:
throughput grows linearly with workers (each renders and embeds its own blocks; the driver only
writes vectors), which holds while the driver keeps up.

    .venv/bin/python scripts/measure_ray.py --distractors 5000
    .venv/bin/python scripts/measure_ray.py --distractors 100000 --methods blur-aware,standard
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click

BIN = Path(sys.executable).parent / "blur-retrieval"


def _run(out: Path, args: list[str]) -> dict:
    """One `bench map` into a fresh `out`; its report."""
    shutil.rmtree(out, ignore_errors=True)
    command = [str(BIN), "bench", "map", *args, "--out", str(out)]  # its progress on stderr
    click.echo("$ " + " ".join(command), err=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def _items(report: dict) -> int:
    data = report["data"]
    return data["queries"] + data["database"] + data["distractors"]


@click.command()
@click.option("--data", default="data/small", show_default=True, help="Data set folder.")
@click.option("--distractors", type=int, default=5000, show_default=True)
@click.option("--methods", default="blur-aware", show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("runs/ray-vs-local"),
              show_default=True)
@click.option("--engine-workers", type=int, help="Ray workers (default: one per CPU).")
@click.option("--project", type=int, default=1_000_000, show_default=True,
              help="Items to project the cluster time for.")
def main(data: str, distractors: int, methods: str, out_dir: Path, engine_workers: int | None,
         project: int) -> None:
    common = ["--data", data, "--distractors", str(distractors), "--methods", methods,
              "--factory", "exact"]
    ray_args = ["--engine", "ray"] + ([] if engine_workers is None
                                      else ["--engine-workers", str(engine_workers)])
    local = _run(out_dir / "local", common)
    ray = _run(out_dir / "ray", common + ray_args)
    items = _items(local)
    workers = ray["config"]["engine"]["workers"]
    seconds = {"local": local["timings_s"]["embed"], "ray": ray["timings_s"]["embed"]}
    per_worker = items / seconds["ray"] / workers
    same = json.dumps(local["results"], sort_keys=True) == json.dumps(ray["results"], sort_keys=True)
    summary = {
        "items": items, "methods": methods, "ray_workers": workers,
        "embed_seconds": seconds, "ratio_local_over_ray": seconds["local"] / seconds["ray"],
        "ray_items_per_s_per_worker": per_worker, "same_scores": same,
        "projection": {f"{project} items on {n} workers (h)": project / (per_worker * n) / 3600
                       for n in (16, 64, 256)},
    }
    click.echo(f"{items:,} items ({methods}): one process {seconds['local']:.0f} s "
               f"({items / seconds['local']:.1f} img/s), Ray with {workers} workers "
               f"{seconds['ray']:.0f} s ({items / seconds['ray']:.1f} img/s): "
               f"{summary['ratio_local_over_ray']:.2f}x; {per_worker:.1f} img/s per worker; "
               f"same scores: {same}")
    for label, hours in summary["projection"].items():
        click.echo(f"  projected, linear in workers: {label} {hours:.2f}")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    click.echo(f"wrote {out_dir / 'summary.json'}")


if __name__ == "__main__":
    main()
