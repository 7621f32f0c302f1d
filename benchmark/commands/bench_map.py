"""`blur-retrieval bench map`: mAP by blur level of several methods on identical data."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from benchmark.commands.engine_options import engine_options, opened_engine, remote_embedder
from benchmark.commands.options import resolve_device, writable_folder
from indexer.cluster.engine import RAY
from retrieval.rerank.names import DEFAULT_LOCATOR, SHIPPED_DENSE
from retrieval.sim.layout import PRESETS

DEFAULT_METHODS = "blur-aware,standard,sharp-only"
DATA_DIR = "data"
CACHE_DIR = ".cache"
BENCHMARK_SPLITS = ("test",)

if TYPE_CHECKING:
    from benchmark.evaluate import Method
    from indexer.cluster.embedding import RemoteEmbedder
    from indexer.cluster.engine import Engine
    from retrieval.rerank.reranker import Reranker


@click.command("map")
@click.option("--data", type=click.Path(exists=True),
              help="Data set folder holding manifest.parquet, or the manifest itself. "
                   "Default: synthesize the --preset into OUT/data.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="small", show_default=True,
              help="Data set to synthesize when --data is not given.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Simulator seed of the synthesized data set.")
@click.option("--distractors", type=click.IntRange(min=0),
              help="Distractors in the database: the data set's own first, then virtual rows "
                   "(no files). Default: those of the data set or preset.")
@click.option("--distractor-objects", type=click.IntRange(min=1), metavar="N",
              help="Spread the virtual distractors over about N objects, one image per "
                   "trajectory (the published layout: 1,562 objects for 1,000,000 images). "
                   "Default: 10 images per object.")
@click.option("--distractor-exposures", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="E",
              help="Images per virtual distractor trajectory, at E exposures spread over "
                   "sharp..longest (the simulator's 11: every one, as the published data set "
                   "rendered them). One render makes all E, so 11 renders several times faster.")
@click.option("--methods", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated shipped checkpoint names or checkpoint directories.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="bench-map",
              callback=writable_folder, show_default=True,
              help="Report folder (embeddings are cached in OUT/.cache).")
@click.option("--factory", default="auto", show_default=True,
              help="'auto' (exact up to 100k vectors, IVF above), 'exact', or a FAISS factory.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per network forward.")
@click.option("--workers", type=click.IntRange(min=0),
              help="Processes loading and rendering images (default: 0 on up to 2 cores, else cores - 2).")
@click.option("--rerank", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also score each method with its top K re-ranked by geometric verification "
                   "(a row per method with and without); 0: off.")
@click.option("--dense", default=SHIPPED_DENSE, show_default=True,
              help=f"Dense checkpoint (directory, or '{SHIPPED_DENSE}' for the shipped one) for --rerank.")
@click.option("--locator", default=DEFAULT_LOCATOR, show_default=True,
              help="Model whose localisation head finds the object for --rerank.")
@engine_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def map_command(data, preset, seed, distractors, distractor_objects, distractor_exposures, methods,
                out_dir, factory, device, batch_size, workers, rerank, dense, locator, engine,
                address, engine_workers, quiet):
    """Compare methods by mAP@100 per blur level 1..6, with distractors; write the report."""
    started = time.perf_counter()
    progress = not quiet
    if engine == RAY and workers is not None:
        raise click.UsageError("--workers sets this process's loaders; with --engine ray, "
                               "give --engine-workers")
    requested_device, device = device, resolve_device(device)
    out = Path(out_dir)
    loaded = load_methods(_method_names(methods), device, batch_size)
    reranker = load_rerank_stage(dense, locator, device, batch_size) if rerank else None
    factory = _checked_factory(factory, {m.embedder.dim for m in loaded})
    if data is None:
        manifest = _synthesized_manifest(out / DATA_DIR, preset, seed, device, progress)
        distractors = PRESETS[preset].distractors if distractors is None else distractors
    else:
        manifest = Path(data)
    config = {
        "data": str(manifest), "synthesized": data is None,
        "preset": {"name": preset, **asdict(PRESETS[preset])} if data is None else None,
        "seed": seed if data is None else None, "distractors_requested": distractors,
        "distractor_objects_requested": distractor_objects,
        "distractor_exposures": distractor_exposures,
        "factory": factory, "device": device, "batch_size": batch_size, "workers": workers,
        # Workers resolve "auto" on their own hosts: a CPU-only driver still gets GPU workers.
        "engine": {"name": engine, "address": address, "workers": engine_workers,
                   "device": requested_device},
        "rerank": {"k": rerank, "dense": dense, "locator": locator,
                   "params": vars(reranker.params)} if reranker else None,
    }
    with opened_engine(engine, address, engine_workers, requested_device) as opened:
        config["engine"]["workers"] = getattr(opened, "workers", None)
        run_map_benchmark(manifest, loaded, out, config, started, progress, reranker, opened)


def run_map_benchmark(manifest: Path, loaded: list[Method], out: Path, config: dict,
                      started: float, progress: bool, reranker: Reranker | None = None,
                      engine: Engine | None = None) -> dict:
    """Evaluate `loaded` methods on the benchmark set of `manifest`; write and print the report.

    `config` carries distractors_requested, factory, device, batch_size and workers (recorded
    verbatim), and with a `reranker` the "rerank" settings (its "k" is the depth re-ranked).
    `engine` (default this process) embeds the images.
    """
    from benchmark.evaluate import EvaluationError, evaluate
    from benchmark.plots import PLOT_NAME, draw_level_grids, plot_map_by_level
    from benchmark.protocol import ProtocolError, load_benchmark_set
    from benchmark.report import build_report, terminal_table, write_report
    from benchmark.vector_cache import VectorCacheError
    from indexer.errors import InvalidFactoryError

    try:
        bench = load_benchmark_set(manifest, config["distractors_requested"],
                                   config.get("distractor_objects_requested"),
                                   config.get("distractor_exposures", 1))
    except ProtocolError as error:
        raise click.ClickException(str(error)) from error
    data_seconds = time.perf_counter() - started
    try:
        evaluation = evaluate(bench, loaded, out / CACHE_DIR, config["factory"], config["device"],
                              progress, config["workers"], engine,
                              _remotes(loaded, config, engine))
    except (EvaluationError, InvalidFactoryError, VectorCacheError) as error:
        raise click.ClickException(str(error)) from error
    if reranker is not None:
        from benchmark.rerank_eval import add_reranked_runs

        add_reranked_runs(bench, evaluation, reranker, config["rerank"]["k"], progress)
    evaluation.timings = {"load models and data": data_seconds, **evaluation.timings}
    report = build_report(config, bench, evaluation, loaded, files={})
    drawing = time.perf_counter()
    plot_map_by_level(report["results"], out / PLOT_NAME)
    grids = draw_level_grids(bench, evaluation, out, progress=progress)
    report["timings_s"]["plots and grids"] = time.perf_counter() - drawing
    report["timings_s"]["total"] = time.perf_counter() - started
    report["files"] = {"plot": PLOT_NAME, "grids": {str(k): v for k, v in grids.items()}}
    json_path, markdown_path = write_report(out, report)
    click.echo(terminal_table(report, "map100"))
    for written in [markdown_path, json_path, out / PLOT_NAME,
                    *(out / path for by_method in grids.values() for path in by_method.values())]:
        click.echo(f"wrote {written}")
    return report


def _remotes(loaded: list[Method], config: dict, engine: Engine | None
             ) -> dict[str, RemoteEmbedder] | None:
    """What a remote engine's workers load for each method (None on the local engine)."""
    if engine is None or not engine.remote:
        return None
    return {m.name: remote_embedder(engine, m.checkpoint or m.name, m.embedder,
                                    config["engine"]["device"], config["batch_size"])
            for m in loaded}


def _method_names(value: str) -> list[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise click.BadParameter("give at least one method", param_hint="--methods")
    if len(set(names)) != len(names):
        raise click.BadParameter(f"a method is listed twice: {value}", param_hint="--methods")
    return names


def load_methods(names: list[str], device: str, batch_size: int) -> list[Method]:
    """Every embedder, loaded before any long work so a wrong name fails at once."""
    from benchmark.commands.support import model_load_errors
    from benchmark.evaluate import Method
    from retrieval.embed import load_embedder
    from retrieval.model import resolve_checkpoint

    methods = []
    for name in names:
        with model_load_errors(name, option="--methods"):
            embedder = load_embedder(name, device=device, batch_size=batch_size)
            checkpoint = str(resolve_checkpoint(name).resolve())
        methods.append(Method(name=name, embedder=embedder, checkpoint=checkpoint))
    return methods


def load_rerank_stage(dense: str, locator: str, device: str, batch_size: int) -> Reranker:
    """The re-ranker, loaded before any long work so a wrong checkpoint fails at once."""
    from benchmark.commands.support import model_load_errors
    from retrieval.rerank.dense_checkpoint import DenseCheckpointError
    from retrieval.rerank.reranker import LocatorError, load_reranker

    with model_load_errors(locator, option="--locator"):
        try:
            return load_reranker(dense, locator, device, batch_size=batch_size)
        except (DenseCheckpointError, LocatorError) as error:
            raise click.BadParameter(str(error), param_hint="--dense/--locator") from error


def _checked_factory(factory: str, dims: set[int]) -> str:
    """A FAISS factory string is checked by building it empty, before hours of embedding."""
    from benchmark.evaluate import EXACT
    from indexer.errors import InvalidFactoryError
    from indexer.factory import AUTO, create_index

    if factory not in (AUTO, EXACT):
        for dim in dims:
            try:
                create_index(factory, dim)
            except InvalidFactoryError as error:
                raise click.BadParameter(str(error), param_hint="--factory") from error
    return factory


def _synthesized_manifest(folder: Path, preset: str, seed: int, device: str,
                          progress: bool) -> Path:
    """The preset's test instances in `folder`: made once, reused by runs with equal settings.

    Images are virtual rows (rendered when embedded) and distractors are added by the
    benchmark, so nothing but the manifest is written; train/val instances are not rendered.
    """
    from retrieval.manifest import MANIFEST_NAME
    from retrieval.sim.config import SimConfig
    from retrieval.synth import synthesize

    chosen = replace(PRESETS[preset], distractors=0)
    config = chosen.sim_config(seed)
    wanted = json.loads(json.dumps({"preset": asdict(chosen), "sim": config.to_dict(),
                                    "virtual": True, "splits": list(BENCHMARK_SPLITS)}))
    record = folder / "synth.json"
    if (folder / MANIFEST_NAME).is_file():
        try:
            made = json.loads(record.read_text(encoding="utf-8"))
            # settings written by an earlier version compare as this version reads them
            made["sim"] = json.loads(json.dumps(SimConfig.from_dict(made["sim"]).to_dict()))
        except (OSError, ValueError, TypeError, KeyError):  # missing or damaged: not to be trusted
            made = {}
        if {key: made.get(key) for key in wanted} == wanted:
            return folder / MANIFEST_NAME
        raise click.ClickException(
            f"{folder}: holds a data set made with other settings (see {record.name}); remove "
            "it or choose another --out"
        )
    return synthesize(folder, chosen, config, virtual=True, device=device, progress=progress,
                      splits=BENCHMARK_SPLITS)
