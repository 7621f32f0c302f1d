"""Throughput measurements compared side by side in one run (never in unit tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from retrieval.sim.config import SimConfig
from retrieval.sim.render import RenderRequest, render_trajectories


def _rate(work: Callable[[int], int], seconds: float) -> float:
    """Items per second of `work(round) -> items`, after one warm-up round."""
    work(0)
    done, start, rounds = 0, time.perf_counter(), 1
    while True:
        done += work(rounds)
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


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


def forward_throughput(model: torch.nn.Module, image_size: tuple[int, int], batch_size: int,
                       seconds: float) -> float:
    """Images per second of the bare network on ready-made input tensors.

    Same precision, memory layout and eval mode as `Embedder.embed`, so comparing the two at the
    same batch size shows what loading, resizing and transfers cost on top of the network.
    """
    from retrieval.devices import autocast, model_device
    from retrieval.embed import eval_mode, to_model_input

    if batch_size < 1 or seconds <= 0:
        raise ValueError(f"need batch_size >= 1 and seconds > 0, got {batch_size}, {seconds}")
    device = model_device(model)
    pixels = torch.randint(0, 256, (batch_size, *image_size, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    images = to_model_input(pixels, device)

    def work(_: int) -> int:
        model(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return batch_size

    with eval_mode(model), torch.inference_mode(), autocast(device):
        return _rate(work, seconds)


def embedding_rates(embedder, paths: list[Path], seconds: float) -> dict[str, float]:
    """Images/s of the bare forward and of `embed` on files, same batch size, one run."""
    forward = forward_throughput(embedder.model, embedder.image_size, embedder.batch_size, seconds)

    def work(_: int) -> int:
        result = embedder.embed(paths)
        if result.errors:
            raise RuntimeError(f"sample images failed to embed: {result.errors[:3]}")
        return len(paths)

    pipeline = _rate(work, seconds)
    return {"forward_img_s": forward, "embed_files_img_s": pipeline, "ratio": pipeline / forward}
