"""Throughput and latency measurements compared side by side in one run (never in unit tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.index_speed import LATENCY_QUERIES, latency_summary
from indexer.index import RetrievalIndex
from retrieval.devices import autocast, model_device
from retrieval.embed import Embedder, decode_threads, eval_mode, to_model_input
from retrieval.images import load_rgb_array
from retrieval.sim.config import SimConfig
from retrieval.sim.render import RenderRequest, render_trajectories

QUERY_WARMUP = 10


def _rates(works: dict[str, Callable[[int], int]], seconds: float) -> dict[str, float]:
    """Items per second of each `work(round) -> items`, after one warm-up round each.

    The works take rounds in turn until each has run `seconds`, so that on a shared machine
    all of them see the same load and their ratios stay meaningful when it changes.
    """
    for work in works.values():
        work(0)
    done = dict.fromkeys(works, 0)
    spent = dict.fromkeys(works, 0.0)
    rounds = 1
    while min(spent.values()) < seconds:
        for name, work in works.items():
            start = time.perf_counter()
            done[name] += work(rounds)
            spent[name] += time.perf_counter() - start
        rounds += 1
    return {name: done[name] / spent[name] for name in works}


def _rate(work: Callable[[int], int], seconds: float) -> float:
    """Items per second of `work(round) -> items`, after one warm-up round."""
    return _rates({"work": work}, seconds)["work"]


def simulator_rate(config: SimConfig, batch: int, all_exposures: bool, seconds: float,
                   device: str = "cpu") -> float:
    """Rendered images per second.

    all_exposures=True renders every exposure of `batch` trajectories (how `synth`
    builds a data set); False renders one image of each of `batch` trajectories at a
    varying exposure (how virtual distractor rows are rendered on demand).
    """

    def work(round_index: int) -> int:
        requests = []
        for i in range(batch):
            trajectory = 10_000 + round_index * batch + i  # fresh trajectories every round
            exposures = tuple(range(config.exposures)) if all_exposures else (i % config.exposures,)
            requests.append(RenderRequest(i % 40, i % 20, trajectory, exposures))
        render_trajectories(config, requests, device)
        return sum(len(r.exposures) for r in requests)

    return _rate(work, seconds)


def network_forward_rate(backbone: str, height: int, width: int, batch: int, seconds: float,
                         device: str = "cpu") -> float:
    """Images per second of a bare timm backbone forward on ready tensors."""
    import timm

    model = timm.create_model(backbone, pretrained=False).eval().to(device)
    images = torch.rand(batch, 3, height, width, device=device)

    def work(_: int) -> int:
        with torch.inference_mode():
            model(images)
        if device == "cuda":
            torch.cuda.synchronize()
        return batch

    return _rate(work, seconds)


def write_sample_images(folder: Path, config: SimConfig, count: int) -> list[Path]:
    """`count` rendered PNGs of the simulator's size: the files an embedding run reads."""
    from PIL import Image

    per_trajectory = config.exposures
    requests = [RenderRequest(t % 40, t % 20, 50_000 + t, tuple(range(per_trajectory)))
                for t in range(-(-count // per_trajectory))]
    paths = []
    for request, images in zip(requests, render_trajectories(config, requests)):
        for exposure, rendered in images.items():
            if len(paths) < count:
                path = folder / f"t{request.trajectory}_e{exposure:02d}.png"
                Image.fromarray(rendered.image).save(path)
                paths.append(path)
    return paths


def _bare_forward(model: torch.nn.Module, image_size: tuple[int, int], batch_size: int,
                  calls: int = 1) -> Callable[[int], int]:
    """`work(round)`: `calls` forwards of the bare network on one ready-made input batch.

    Same precision, memory layout and eval mode as `Embedder.embed`, so comparing the two at the
    same batch size shows what loading, resizing and transfers cost on top of the network.
    """
    device = model_device(model)
    pixels = torch.randint(0, 256, (batch_size, *image_size, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    images = to_model_input(pixels, device)

    def work(_: int) -> int:
        with eval_mode(model), torch.inference_mode(), autocast(device):
            for _ in range(calls):
                model(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return calls * batch_size

    return work


def forward_throughput(model: torch.nn.Module, image_size: tuple[int, int], batch_size: int,
                       seconds: float) -> float:
    """Images per second of the bare network on ready-made input tensors (see `_bare_forward`)."""
    if batch_size < 1 or seconds <= 0:
        raise ValueError(f"need batch_size >= 1 and seconds > 0, got {batch_size}, {seconds}")
    return _rate(_bare_forward(model, image_size, batch_size), seconds)


def embedding_rates(embedder: Embedder, paths: list[Path], seconds: float) -> dict[str, Any]:
    """Images/s of the bare forward and of `embed` on files, same batch size, one run.

    A round of each is the same number of batches (one pass over `paths`), and the two take
    rounds in turn, so both see the same machine load.
    """
    batches = -(-len(paths) // embedder.batch_size)

    def pipeline(_: int) -> int:
        result = embedder.embed(paths)
        if result.errors:
            raise RuntimeError(f"sample images failed to embed: {result.errors[:3]}")
        return len(paths)

    forward = _bare_forward(embedder.model, embedder.image_size, embedder.batch_size, batches)
    rates = _rates({"forward": forward, "pipeline": pipeline}, seconds)
    workers = embedder.workers if batches > 1 else 0
    return {"forward_img_s": rates["forward"], "embed_files_img_s": rates["pipeline"],
            "ratio": rates["pipeline"] / rates["forward"], "images": len(paths),
            "workers": workers, "decode_threads": decode_threads(workers)}


def query_latency(embedder: Embedder, index: RetrievalIndex, paths: Sequence[Path], k: int,
                  queries: int = LATENCY_QUERIES, warmup: int = QUERY_WARMUP) -> dict[str, Any]:
    """Latency of one query image file at a time: decode and resize it, embed it (a batch of
    one), search `index` for its top `k`; `paths` are taken in turn.

    Each stage is timed (p50/p99 each) and the end-to-end time of a query is the three back to
    back. The embed stage is `Embedder.embed` on the decoded pixels, which checks and copies
    them once more (tens of microseconds) before the forward. The first `warmup` queries are
    not counted.
    """
    if queries < 1 or warmup < 0 or not paths:
        raise ValueError(f"need queries >= 1, warmup >= 0 and some paths, got {queries}, {warmup}, "
                         f"{len(paths)} paths")
    times: dict[str, list[float]] = {"decode": [], "embed": [], "search": [], "end_to_end": []}
    for number in range(warmup + queries):
        path = paths[number % len(paths)]
        start = time.perf_counter()
        pixels = load_rgb_array(path, embedder.image_size)
        decoded = time.perf_counter()
        result = embedder.embed([pixels])
        embedded = time.perf_counter()
        if result.errors:
            raise RuntimeError(f"query {path} failed to embed: {result.errors[0][1]}")
        index.search_vectors(np.asarray(result.vectors), k)
        done = time.perf_counter()
        if number >= warmup:
            for name, seconds in (("decode", decoded - start), ("embed", embedded - decoded),
                                  ("search", done - embedded), ("end_to_end", done - start)):
                times[name].append(seconds)
    return {"queries": queries, "warmup": warmup, "k": k,
            **{name: latency_summary(values) for name, values in times.items()}}
