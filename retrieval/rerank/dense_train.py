"""Training the dense network on exact simulator correspondences (InfoNCE over cells).

For each corresponding cell pair (a in image A, b in image B) of a pair batch, a's descriptor
must pick b among every cell of every B image in the batch (and the other way round): the
other cells of B teach where on the object a point is, the cells of other instances' images
teach which object it is, and the blur of A or B teaches invariance to blur. Validation is the
share of val-instance cells whose best match in the paired image lands within one cell of the
true one (stored val images, their own backgrounds, true boxes).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from retrieval.devices import resolve_device
from retrieval.rerank.dense_checkpoint import save_dense
from retrieval.rerank.dense_data import PairBatch, PairSampler
from retrieval.rerank.dense_net import DenseFeatureNet, object_crops
from retrieval.rerank.dense_val import build_val_pairs, match_accuracy
from retrieval.rerank.names import DENSE_CROP
from retrieval.train.errors import ResumeError
from retrieval.train.state import LOG_FILENAME, TrainLog, load_train_state, save_train_state
from retrieval.train.stream import background_bank, open_composite_stream, synth_settings

LOG = logging.getLogger(__name__)
STATE_NAME = "dense_state.pt"


@dataclass(frozen=True)
class DenseTrainSettings:
    data_dir: str
    out_dir: str
    steps: int = 1200
    pairs: int = 24  # image pairs per step
    lr: float = 2e-3
    dim: int = 32
    stride: int = 4
    crop: int = DENSE_CROP  # side of the object crop the network describes
    temperature: float = 0.1
    cells_per_pair: int = 48  # correspondences drawn per pair and step
    per_category: int = 4  # instances drawn together from one category (look-alike negatives)
    val_pairs: int = 300
    val_every: int = 200
    seed: int = 0
    device: str = "cpu"
    resume: bool = False


def correspondence_loss(desc_a: torch.Tensor, desc_b: torch.Tensor, targets: list[np.ndarray],
                        temperature: float, cells_per_pair: int, rng: np.random.Generator
                        ) -> torch.Tensor:
    """Symmetric InfoNCE: each drawn A cell against all B cells of the batch, and vice versa.

    desc_*: [P, D, G, G] unit descriptors; targets: per pair int64 [N, 2] (cell A, cell B).
    A batch without any correspondence gives a zero that keeps the graph.
    """
    pairs, dim = desc_a.shape[:2]
    cells = desc_a.shape[2] * desc_a.shape[3]
    flat_a = desc_a.flatten(2).transpose(1, 2).reshape(pairs * cells, dim)
    flat_b = desc_b.flatten(2).transpose(1, 2).reshape(pairs * cells, dim)
    chosen = []
    for pair, target in enumerate(targets):
        if len(target) > cells_per_pair:
            target = target[np.sort(rng.choice(len(target), cells_per_pair, replace=False))]
        chosen.append(target + pair * cells)
    if not any(len(c) for c in chosen):
        return desc_a.sum() * 0.0
    index = torch.from_numpy(np.concatenate(chosen)).to(desc_a.device)
    forward = F.cross_entropy(flat_a[index[:, 0]] @ flat_b.T / temperature, index[:, 1])
    backward = F.cross_entropy(flat_b[index[:, 1]] @ flat_a.T / temperature, index[:, 0])
    return (forward + backward) / 2


def _describe(net: DenseFeatureNet, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    crops, _ = object_crops(images, boxes, net.crop)
    return net(crops)


def _learning_rate(settings: DenseTrainSettings, step: int) -> float:
    return settings.lr * 0.5 * (1 + math.cos(math.pi * step / settings.steps))


def train_dense(settings: DenseTrainSettings, progress: bool = True) -> dict:
    """Train (or resume) and keep the best-validating weights in `out_dir`; returns the summary."""
    torch.manual_seed(settings.seed)
    device = torch.device(resolve_device(settings.device))
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = Path(settings.data_dir) / "manifest.parquet"
    _, config = synth_settings(manifest)
    _, stream, fingerprint = open_composite_stream(manifest, (config.height, config.width), False,
                                                   settings.seed, progress)
    sampler = PairSampler(stream.bank, config, background_bank(config, 256),
                          settings.seed, settings.per_category)
    net = DenseFeatureNet(settings.dim, settings.stride, settings.crop).to(device)
    val = build_val_pairs(manifest, config, settings.val_pairs, net.grid, settings.seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr)
    state = _load_state(out, settings, net, optimiser) if settings.resume else None
    step, best = (state["step"], state["best"]) if state else (0, -1.0)
    log = TrainLog(out / LOG_FILENAME)
    if state is None and log.path.exists():
        log.path.unlink()  # a fresh run starts a fresh log
    started = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=step, desc="train dense", disable=not progress)
    try:
        while step < settings.steps:
            for group in optimiser.param_groups:
                group["lr"] = _learning_rate(settings, step)
            loss = _train_step(net, optimiser, sampler.batch(step, settings.pairs, net.grid),
                               settings, device, np.random.default_rng((settings.seed, 29, step)))
            step += 1
            bar.update(1)
            if step % 20 == 0:
                log.append({"event": "train", "step": step, "loss": loss,
                            "seconds": time.perf_counter() - started})
            if step % settings.val_every == 0 or step == settings.steps:
                accuracy = match_accuracy(net, val, device)
                log.append({"event": "val", "step": step, "match_accuracy": accuracy})
                if accuracy > best:
                    best = accuracy
                    save_dense(out, net, {"data_fingerprint": fingerprint, "step": step,
                                          "validation": {"match_accuracy": accuracy},
                                          "training": asdict(settings)})
                _save_state(out, settings, net, optimiser, step, best)
    finally:
        bar.close()
    return {"steps": step, "best_match_accuracy": best, "out": str(out)}


def _train_step(net: DenseFeatureNet, optimiser: torch.optim.Optimizer, batch: PairBatch,
                settings: DenseTrainSettings, device: torch.device, rng: np.random.Generator
                ) -> float:
    net.train()
    desc_a = _describe(net, batch.images_a.to(device), batch.boxes_a.to(device))
    desc_b = _describe(net, batch.images_b.to(device), batch.boxes_b.to(device))
    loss = correspondence_loss(desc_a, desc_b, batch.targets, settings.temperature,
                               settings.cells_per_pair, rng)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def _save_state(out: Path, settings: DenseTrainSettings, net: DenseFeatureNet,
                optimiser: torch.optim.Optimizer, step: int, best: float) -> None:
    save_train_state(out / STATE_NAME, {"settings": _resumable(settings), "model": net.state_dict(),
                                        "optimiser": optimiser.state_dict(), "step": step,
                                        "best": best})


def _resumable(settings: DenseTrainSettings) -> dict:
    free = {"resume", "device", "out_dir", "data_dir"}
    return {key: value for key, value in asdict(settings).items() if key not in free}


def _load_state(out: Path, settings: DenseTrainSettings, net: DenseFeatureNet,
                optimiser: torch.optim.Optimizer) -> dict:
    path = out / STATE_NAME
    state = load_train_state(path)
    if state.get("settings") != _resumable(settings):
        raise ResumeError(f"{path}: cannot resume with different settings "
                          f"(saved {state.get('settings')}, given {_resumable(settings)})")
    net.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    TrainLog(out / LOG_FILENAME).trim_after(state["step"], epochs_done=0)  # no epoch records here
    return state
