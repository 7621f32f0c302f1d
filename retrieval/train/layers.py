"""The layer bank: every training image's motion-blurred object layer, rendered once.

Training images are not the files `synth` writes. In those, all exposures of a trajectory share
one background and each instance has a handful of trajectories, so a classifier can learn the
backgrounds of its training instances and nothing that transfers (measured: 22 % training
accuracy, validation at chance). The bank keeps only the object layer of each image
(premultiplied linear colour and coverage, no background, no camera curve, no noise), cut to the
window the object touched, so the stream (`stream.py`) can put it over a background drawn
independently of the instance at every step.

Layers are stored as uint8: colour as the square root of premultiplied linear light (a gamma
of 2, like the backgrounds), coverage linearly. Labels (v = 1 - blur severity, the streak box)
come from the float coverage before rounding, exactly as `synth` labels its files.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from retrieval.fileio import atomic_path, write_json_atomic
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset, plan_trajectories
from retrieval.sim.objects import global_instance_id
from retrieval.sim.photos import photo_fingerprint
from retrieval.sim.render import RenderRequest, render_object_layers
from retrieval.sim.severity import blur_value, streak_box
from retrieval.train.errors import TrainDataError

BANK_FORMAT = 1
ARRAYS_NAME = "layers.npz"
SETTINGS_NAME = "layers.json"
_RENDER_BATCH = 32  # trajectories rendered together


@dataclass(frozen=True)
class LayerBank:
    """Object layers of the train split, one row per (instance, trajectory, exposure)."""

    pixels: np.ndarray  # uint8 [total, 4]: every row's window, flattened, one after another
    offsets: np.ndarray  # int64 [rows + 1]: row r's pixels are pixels[offsets[r]:offsets[r+1]]
    windows: np.ndarray  # int64 [rows, 4]: (top, left, height, width) in the image
    instance: np.ndarray  # int64 [rows]: global instance id
    trajectory: np.ndarray  # int64 [rows]
    exposure: np.ndarray  # int64 [rows]
    blur_value: np.ndarray  # float32 [rows]: v = 1 - blur severity
    box: np.ndarray  # float32 [rows, 4]: normalised (cx, cy, w, h) of the streak
    image_size: tuple[int, int]
    settings: dict | None = None  # what its pixels depend on (`bank_settings`), when known

    def __len__(self) -> int:
        return len(self.instance)

    def layer(self, row: int) -> torch.Tensor:
        """float32 [4, H, W]: premultiplied linear RGB and coverage of one row, zero outside."""
        height, width = self.image_size
        top, left, rows, cols = (int(v) for v in self.windows[row])
        window = torch.from_numpy(
            np.asarray(self.pixels[self.offsets[row]:self.offsets[row + 1]])
        ).view(rows, cols, 4).permute(2, 0, 1).float() / 255.0
        layer = torch.zeros(4, height, width)
        layer[:3, top:top + rows, left:left + cols] = window[:3] * window[:3]
        layer[3, top:top + rows, left:left + cols] = window[3]
        return layer


def bank_settings(preset: Preset, config: SimConfig) -> dict:
    """What the bank's pixels depend on; a bank with other settings is rebuilt. With photos,
    that includes the pictures' content, not only the source's name."""
    settings = {"format": BANK_FORMAT, "preset": asdict(preset), "sim": config.to_dict(),
                "split": "train"}
    if config.photos:
        settings["photo_sha256"] = photo_fingerprint(config.photos, config.photo_split)
    return settings


def load_or_build_layer_bank(folder: str | Path, preset: Preset, config: SimConfig,
                             device: str = "cpu", progress: bool = True) -> LayerBank:
    """The bank in `folder`, built there first if it is missing or made with other settings."""
    folder = Path(folder)
    settings = bank_settings(preset, config)
    settings_path = folder / SETTINGS_NAME
    current = None
    if settings_path.is_file():
        try:
            current = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            current = None
    if current != json.loads(json.dumps(settings)) or not (folder / ARRAYS_NAME).is_file():
        build_layer_bank(folder, preset, config, device, progress)
    return _read_bank(folder / ARRAYS_NAME, (config.height, config.width), settings)


def default_processes() -> int:
    """Render processes: one on machines of up to 2 cores (torch's threads use both), else
    all cores but one (each process renders its share of trajectories single-threaded)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 1 if (cores or 1) <= 2 else cores - 1


def build_layer_bank(folder: str | Path, preset: Preset, config: SimConfig, device: str = "cpu",
                     progress: bool = True, processes: int | None = None) -> None:
    """Render every exposure of every train trajectory and store the layers (atomically).

    Rows never depend on their batch, so the bank has the same bits however many processes
    render it. Photographs that change while it renders would leave pixels from either version
    under settings of one: then nothing is written (TrainDataError), and a rerun builds anew.
    """
    folder = Path(folder)
    settings = bank_settings(preset, config)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [job for job in plan_trajectories(preset) if job.split == "train"]
    batches = [jobs[start:start + _RENDER_BATCH] for start in range(0, len(jobs), _RENDER_BATCH)]
    processes = default_processes() if processes is None else processes
    chunks: list[np.ndarray] = []
    columns: dict[str, list] = {key: [] for key in
                                ("windows", "instance", "trajectory", "exposure", "blur_value", "box")}
    bar = tqdm(total=len(jobs), unit="traj", desc="layer bank", disable=not progress)
    with bar, ProcessPoolExecutor(processes) if processes > 1 else _InProcess() as pool:
        for batch, (windows, rows) in zip(batches, pool.map(
                _render_batch, [(config, batch, device, processes > 1) for batch in batches])):
            chunks.extend(windows)
            for key, values in rows.items():
                columns[key].extend(values)
            bar.update(len(batch))
    sizes = np.array([len(chunk) for chunk in chunks], dtype=np.int64)
    arrays = {
        "pixels": np.concatenate(chunks) if chunks else np.zeros((0, 4), np.uint8),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "windows": np.array(columns["windows"], dtype=np.int64).reshape(-1, 4),
        "instance": np.array(columns["instance"], dtype=np.int64),
        "trajectory": np.array(columns["trajectory"], dtype=np.int64),
        "exposure": np.array(columns["exposure"], dtype=np.int64),
        "blur_value": np.array(columns["blur_value"], dtype=np.float32),
        "box": np.array(columns["box"], dtype=np.float32).reshape(-1, 4),
    }
    if bank_settings(preset, config) != settings:
        raise TrainDataError(f"{config.photos}: the photographs changed while the layer bank in "
                             f"{folder} was rendered; nothing was written, build it again")
    with atomic_path(folder / ARRAYS_NAME) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    write_json_atomic(folder / SETTINGS_NAME, settings)


class _InProcess:
    """The executor interface, run in this process (no pool on small machines)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, function, items):
        return map(function, items)


def _render_batch(task: tuple) -> tuple[list[np.ndarray], dict[str, list]]:
    """Encoded windows and label columns of one batch of trajectories, every exposure."""
    config, batch, device, single_thread = task
    if single_thread:
        torch.set_num_threads(1)
    exposures = tuple(range(config.exposures))
    requests = [RenderRequest(j.category, j.instance, j.trajectory, exposures) for j in batch]
    windows: list[np.ndarray] = []
    rows: dict[str, list] = {key: [] for key in
                             ("windows", "instance", "trajectory", "exposure", "blur_value", "box")}
    for job, layers in zip(batch, render_object_layers(config, requests, device)):
        for exposure in exposures:
            window, labels = _encoded_window(layers[exposure].cpu())
            windows.append(window)
            rows["windows"].append(labels["window"])
            rows["instance"].append(global_instance_id(job.category, job.instance))
            rows["trajectory"].append(job.trajectory)
            rows["exposure"].append(exposure)
            rows["blur_value"].append(labels["blur_value"])
            rows["box"].append(labels["box"])
    return windows, rows


def _encoded_window(layer: torch.Tensor) -> tuple[np.ndarray, dict]:
    """The covered window of one layer as uint8 [h*w, 4], with its labels."""
    alpha = layer[3].numpy()
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    labels = {"blur_value": blur_value(alpha), "box": streak_box(alpha)}
    if rows.size == 0:
        labels["window"] = (0, 0, 0, 0)
        return np.zeros((0, 4), np.uint8), labels
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    window = layer[:, top:bottom, left:right].clamp(0, 1)
    window = torch.cat([window[:3].sqrt(), window[3:]])
    encoded = (window * 255).round().to(torch.uint8).permute(1, 2, 0).reshape(-1, 4)
    labels["window"] = (int(top), int(left), int(bottom - top), int(right - left))
    return encoded.numpy(), labels


def _read_bank(path: Path, image_size: tuple[int, int], settings: dict) -> LayerBank:
    with np.load(path) as arrays:
        fields = {key: arrays[key] for key in arrays.files}
    return LayerBank(image_size=image_size, settings=settings, **fields)
