"""`blur-retrieval bench ...`: measurements users can rerun on their machine."""

from __future__ import annotations

import platform

import click

from benchmark.commands.bench_map import map_command
from benchmark.commands.bench_merge import merge_command
from benchmark.commands.engine_options import engine_options, opened_engine
from benchmark.commands.options import parse_memory, parse_size, resolve_device
from retrieval.fileio import write_json_atomic

K = 100  # neighbours per query in `bench speed`, as in the index measurement


def _parse_sizes(ctx, param, value: str) -> list[tuple[int, int]]:
    return [parse_size(ctx, param, part) for part in value.split(",") if part.strip()]


@click.group()
def bench() -> None:
    """Benchmarks: speed of each stage, accuracy by blur level."""


@bench.command("sim")
@click.option("--sizes", default="128x128,240x320", show_default=True, callback=_parse_sizes,
              help="Comma-separated HxW sizes.")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Trajectories per render call, images per network forward.")
@click.option("--seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Measuring time per figure.")
@click.option("--backbone", default="resnet18", show_default=True, help="Reference network.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures here.")
def bench_sim(sizes, batch, seconds, backbone, device, json_path):
    """Simulator images/s against a network forward at the same size and batch."""
    import torch

    from benchmark.speed import network_forward_rate, simulator_rate
    from retrieval.sim.config import SimConfig

    device = resolve_device(device)
    rows = []
    for height, width in sizes:
        config = SimConfig(height=height, width=width)
        dataset_rate = simulator_rate(config, batch, True, seconds, device)
        on_demand_rate = simulator_rate(config, batch, False, seconds, device)
        forward = network_forward_rate(backbone, height, width, batch, seconds, device)
        rows.append({
            "size": f"{height}x{width}", "simulator_dataset_img_s": dataset_rate,
            "simulator_on_demand_img_s": on_demand_rate, f"{backbone}_forward_img_s": forward,
            "ratio_dataset": dataset_rate / forward, "ratio_on_demand": on_demand_rate / forward,
        })
    click.echo(f"{'size':>9} {'sim (all exposures)':>20} {'sim (one per row)':>18} "
               f"{backbone + ' fwd':>14} {'ratio':>7} {'ratio 1/row':>11}")
    for row in rows:
        click.echo(f"{row['size']:>9} {row['simulator_dataset_img_s']:>16.1f} i/s "
                   f"{row['simulator_on_demand_img_s']:>14.1f} i/s "
                   f"{row[backbone + '_forward_img_s']:>10.1f} i/s {row['ratio_dataset']:>6.2f}x "
                   f"{row['ratio_on_demand']:>10.2f}x")
    if json_path:
        write_json_atomic(json_path, {
            "device": device, "batch": batch, "seconds": seconds, "backbone": backbone,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "results": rows,
        })
        click.echo(f"wrote {json_path}")





@bench.command("index")
@click.option("--n", "count", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Database vectors.")
@click.option("--dim", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--k", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--factory", "factories", multiple=True, default=("exact", "auto"), show_default=True,
              help="exact, auto or a FAISS factory string; repeat for several.")
@click.option("--index-memory", callback=parse_memory, metavar="SIZE",
              help="Memory budget of the auto index, as index build --index-memory takes it "
                   "(e.g. 1GB): auto then picks the most accurate compressed index that fits.")
@click.option("--brute-force-queries", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="FAISS threads (default: FAISS's choice).")
@click.option("--spread", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Noise around cluster centres of the synthetic vectors (harder when larger).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report here.")
@engine_options
def bench_index(count, dim, queries, k, factories, index_memory, brute_force_queries, threads, spread,
                seed, device, quiet, json_path, engine, address, engine_workers):
    """Build time, QPS, latency, memory and recall of exact and auto indexes against brute force."""
    from benchmark.index_speed import run_index_benchmark
    from benchmark.index_speed_summary import format_summary

    if index_memory is not None and "auto" not in factories:
        raise click.UsageError("--index-memory is the budget of the auto index: add --factory auto")
    try:
        with opened_engine(engine, address, engine_workers, "cpu") as opened:
            report = run_index_benchmark(n=count, dim=dim, queries=queries, k=k, seed=seed,
                                         device=device, factories=factories,
                                         brute_force_queries=brute_force_queries,
                                         progress=not quiet, omp_threads=threads, spread=spread,
                                         memory=index_memory, engine=opened)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    click.echo(format_summary(report))
    if json_path:
        write_json_atomic(json_path, report)
        click.echo(f"wrote {json_path}")


@bench.command("speed")
@click.option("--model", default="blur-aware", show_default=True, help="Shipped name or checkpoint.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--images", type=click.IntRange(min=8), default=512, show_default=True,
              help="PNG files embedded by the pipeline measurement.")
@click.option("--vectors", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Synthetic database size for the index measurement.")
@click.option("--seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=200, show_default=True,
              help="Single image queries timed end to end (decode, embed, search the auto index).")
@click.option("--workers", type=click.IntRange(min=0), help="Embedding loader processes.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures here.")
def bench_speed(model, batch_size, images, vectors, seconds, queries, workers, device, quiet, json_path):
    """Every stage side by side: simulator, embedding vs bare forward, index vs brute force, and
    one query image end to end."""
    import tempfile
    from pathlib import Path

    import torch

    from benchmark.commands.support import model_load_errors
    from benchmark.index_speed import run_index_benchmark
    from benchmark.index_speed_summary import format_summary
    from benchmark.speed import embedding_rates, query_latency, simulator_rate, write_sample_images
    from retrieval.embed import load_embedder
    from retrieval.sim.config import SimConfig

    device = resolve_device(device)
    with model_load_errors(model):
        embedder = load_embedder(model, device=device, batch_size=batch_size, workers=workers)
    height, width = embedder.image_size
    config = SimConfig(height=height, width=width)
    simulator = {
        "dataset_img_s": simulator_rate(config, 32, True, seconds, device),
        "on_demand_img_s": simulator_rate(config, 32, False, seconds, device),
    }
    query = {"index": "auto"}

    def time_queries(kind: str, built) -> None:
        if kind == query["index"]:
            query.update(query_latency(embedder, built, paths, K, queries))

    with tempfile.TemporaryDirectory() as folder:
        paths = write_sample_images(Path(folder), config, images)
        embedding = embedding_rates(embedder, paths, seconds)
        index = run_index_benchmark(n=vectors, dim=embedder.dim, k=K, device=device,
                                    progress=not quiet, with_index=time_queries)
    query["factory"] = index["indexes"][query["index"]]["factory"]
    click.echo(f"model {model} ({embedder.fingerprint}), input {height}x{width}, batch {batch_size}")
    click.echo(f"simulator: {simulator['dataset_img_s']:.1f} img/s (all exposures), "
               f"{simulator['on_demand_img_s']:.1f} img/s (one image per trajectory)")
    click.echo(f"embedding: bare forward {embedding['forward_img_s']:.1f} img/s, pipeline on "
               f"{embedding['images']} PNG files {embedding['embed_files_img_s']:.1f} img/s "
               f"({embedding['workers']} loader processes, {embedding['decode_threads']} decode threads), "
               f"ratio {embedding['ratio']:.2f}")
    forward = embedding["forward_img_s"]
    click.echo(f"simulator / forward: {simulator['dataset_img_s'] / forward:.2f}x (all exposures), "
               f"{simulator['on_demand_img_s'] / forward:.2f}x (on demand)")
    click.echo(format_summary(index))
    click.echo(_query_line(query, vectors))
    if json_path:
        write_json_atomic(json_path, {
            "model": model, "fingerprint": embedder.fingerprint, "device": device,
            "batch_size": batch_size, "torch_threads": torch.get_num_threads(), "query": query,
            "simulator": simulator, "embedding": embedding, "index": index,
        })
        click.echo(f"wrote {json_path}")


def _query_line(query: dict, vectors: int) -> str:
    stages = ", ".join(f"{label} {query[name]['p50_ms']:.2f} ms" for name, label in
                       (("decode", "decode+resize"), ("embed", "embed"), ("search", "search")))
    return (f"one query end to end ({query['queries']} queries of one PNG file, {query['index']} index "
            f"{query['factory']} over {vectors:,} vectors, k={query['k']}): "
            f"p50 {query['end_to_end']['p50_ms']:.2f} ms, p99 {query['end_to_end']['p99_ms']:.2f} ms; "
            f"p50 by stage: {stages}")


bench.add_command(map_command)
bench.add_command(merge_command)
