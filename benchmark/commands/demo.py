"""`blur-retrieval demo`: the whole product in one command, with no downloads.

Synthesizes a small benchmark (test instances only, plus distractors), indexes its
database with the shipped blur-aware model, answers one blurry query per blur level
(a retrieval grid), then compares blur-aware with standard by mAP@100 per blur level.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from benchmark.commands.bench_map import load_methods, run_map_benchmark
from benchmark.commands.options import resolve_device, writable_folder
from retrieval.sim.layout import Preset

# 40 categories x 3 test instances; 2 query and 4 database trajectories per instance.
DEMO_PRESET = Preset(categories=40, instances=20, trajectories=6, height=96, width=128,
                     distractors=2000)
INDEX_ROLES = ("database", "distractor")


def _synthesize(folder: Path, seed: int, device: str, progress: bool) -> Path:
    from retrieval.manifest import MANIFEST_NAME
    from retrieval.synth import synthesize

    manifest = folder / MANIFEST_NAME
    if manifest.is_file():  # a finished earlier demo: the same seed gives the same data
        return manifest
    config = DEMO_PRESET.sim_config(seed)
    return synthesize(folder, DEMO_PRESET, config, device=device, progress=progress,
                      splits=("test",))


def _index_and_query(manifest: Path, out: Path, model: str, embedder, progress: bool) -> Path:
    """Index the database + distractors, search one query per blur level, draw the grid
    (each query captioned with its blur level and blur severity, hits framed green when they
    show the query's instance, red otherwise)."""
    import pyarrow.compute as pc

    from indexer.api import Source, build_index, open_index, source_from_manifest
    from indexer.grid import GridRow, draw_grid
    from indexer.models import recorded_model

    everything = source_from_manifest(manifest)
    roles = everything.metadata["role"]
    keep = pc.is_in(roles, value_set=pc.cast(INDEX_ROLES, roles.type)).to_numpy(zero_copy_only=False)
    positions = [i for i, wanted in enumerate(keep) if wanted]
    database = Source(items=[everything.items[i] for i in positions],
                      metadata=everything.metadata.filter(keep), origin=everything.origin)
    index_dir = out / "index"
    if not (index_dir / "manifest.json").exists():
        build_index(database, embedder, index_dir, progress=progress, model_name=recorded_model(model))
    index = open_index(index_dir)
    table = everything.metadata
    picked = []  # manifest positions: one query per blur level
    for level in range(1, 7):
        mask = pc.and_(pc.equal(table["role"], "query"), pc.equal(table["blur_level"], level))
        chosen = [i for i, hit in enumerate(mask.to_numpy(zero_copy_only=False)) if hit]
        if chosen:
            picked.append(chosen[len(chosen) // 2])
    search = index.search_images([everything.items[i] for i in picked], embedder, k=5)
    rows = []
    for result in search.results:
        query = table.slice(picked[result.item], 1).to_pylist()[0]
        rows.append(GridRow(
            query=str(everything.items[picked[result.item]].path),
            hits=[(hit.path, hit.score) for hit in result.hits],
            caption=f"blur level {query['blur_level']}, severity {query['blur_severity']:.2f}",
            correct=[hit.row.get("instance") == query["instance"] for hit in result.hits]))
    grid = out / "demo_queries.png"
    draw_grid(rows, grid, thumb=128, max_hits=5)
    return grid


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/demo",
              callback=writable_folder, show_default=True, help="Where the data set, index and report go.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--methods", default="blur-aware,standard", show_default=True,
              help="Methods compared; the first one builds the index.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo_command(out_dir, seed, device, methods, quiet):
    """Synthesize, index, query by blurry images and benchmark, in about a minute and a half on a
    2-core CPU (the README gives the measured time)."""
    started = time.perf_counter()
    progress = not quiet
    device = resolve_device(device)
    out = Path(out_dir)
    names = [name.strip() for name in methods.split(",") if name.strip()]
    loaded = load_methods(names, device, batch_size=64)
    click.echo(f"1/3 synthesizing a benchmark set in {out / 'data'}")
    manifest = _synthesize(out / "data", seed, device, progress)
    click.echo(f"2/3 indexing it with {names[0]} in {out / 'index'} and querying one blurry "
               "image per blur level")
    grid = _index_and_query(manifest, out, names[0], loaded[0].embedder, progress)
    click.echo(f"wrote {grid}")
    click.echo("3/3 mAP@100 by blur level")
    config = {"data": str(manifest), "synthesized": True, "seed": seed,
              "distractors_requested": None, "factory": "auto", "device": device, "workers": None}
    run_map_benchmark(manifest, loaded, out / "report", config, started, progress)
    click.echo(f"demo finished in {time.perf_counter() - started:.0f} s")
