"""Turn images of any kind into unit vectors with a BlurAwareNet, batch by batch.

Items may be image paths, PIL images, numpy arrays (H x W x 3 uint8, or float in [0, 1]) or
manifest rows (a stored file, or a virtual row rendered by the simulator). Every item is made
into 8-bit RGB and bilinearly resized to the checkpoint's input size, so a file and the virtual
row it was written from give the same pixels and the same vector. An item that cannot be read
or rendered is reported in `EmbedResult.errors` with a message naming it; the rest of its batch
is embedded as usual.

Pixels are prepared by a torch DataLoader whose dataset yields whole batches, so loading and
rendering overlap with the network in worker processes while the main process only runs the
forward pass; without workers, the files of a batch are decoded by several threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from retrieval.devices import autocast, model_device, resolve_device
from retrieval.images import ImageLoadError, load_rgb_array, to_rgb_image
from retrieval.manifest import ManifestRow
from retrieval.model import BlurAwareNet, load_checkpoint, model_fingerprint
from retrieval.model.checkpoint import FINGERPRINT_KEYS

DEFAULT_BATCH_SIZE = 64
# Networks and their inputs use channels_last on every device: measured on the 2-core CPU with the
# shipped plainnet_s model, 557 against 389 img/s for inference and 158 against 119 img/s for a
# training step (CUDA convolutions want it too).
CHANNELS_LAST = torch.channels_last
MAX_DEFAULT_WORKERS = 8


@dataclass
class EmbedResult:
    """Vectors of the items that could be embedded, and why the others could not."""

    vectors: np.ndarray  # float32 (n_ok, D), unit rows, in the order of `ok`
    ok: np.ndarray  # int64 indices into the input items that succeeded, ascending
    errors: list[tuple[int, str]]  # (index into items, message naming the item and problem)
    # What the auxiliary heads predicted for the same rows, so a caller showing a query (the
    # HTTP server) gets them from the one forward pass; None when the model lacks that head.
    blur_values: np.ndarray | None = None  # float32 (n_ok,): predicted v = 1 - blur severity
    boxes: np.ndarray | None = None  # float32 (n_ok, 4): normalised streak box (cx, cy, w, h)


def default_workers() -> int:
    """Loader processes: none on machines of up to 2 cores, else every core but two, at most 8.

    On a quiet 2-core machine a CPU model embedded 96x128 PNGs at 787 img/s with 0 workers
    and 508 img/s with 1 (the worker process and the tensor hand-off take cores the network
    needs); with more cores, workers keep decoding and rendering ahead of the network.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS / Windows
        cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(MAX_DEFAULT_WORKERS, cores - 2)


def _is_virtual(item: Any) -> bool:
    return isinstance(item, ManifestRow) and item.path is None


def _needs_loading(item: Any) -> bool:
    """Files and virtual rows cost decoding or rendering; in-memory images do not."""
    return isinstance(item, (str, os.PathLike, ManifestRow))


def _resized(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    # Same call as `load_rgb_array`, so files and in-memory copies give identical pixels.
    height, width = size
    return np.array(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def decode_threads(workers: int) -> int:
    """Threads that decode the items of one batch: 1 inside loader processes (each decodes its
    own batch), else as many as torch gives the network.

    With no loader process (machines of up to 2 cores, see `default_workers`) decoding runs
    between forward passes, where one thread would leave the other cores idle. Timed in turns
    on 2 cores shared with another job, a PNG pipeline went from 0.78 to 0.89 of the bare
    forward's rate in one measurement and did not change in others (not yet repeated on a quiet
    machine). Decoding the next batch in a background thread during the forward gained nothing:
    it competes with torch's threads.
    """
    return 1 if workers else max(1, torch.get_num_threads())


def _item_pixels(item: Any, size: tuple[int, int]) -> np.ndarray:
    """Pixels of one non-virtual item; raises ValueError/TypeError with a message naming it."""
    if isinstance(item, ManifestRow):
        return load_rgb_array(item.path, size)
    if isinstance(item, (str, os.PathLike)):
        return load_rgb_array(item, size)
    if isinstance(item, (Image.Image, np.ndarray)):
        try:
            return _resized(to_rgb_image(item), size)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"in-memory {type(item).__name__}: {exc}") from exc
    raise TypeError(
        f"cannot embed an object of type {type(item).__name__}; give a path, a PIL image, "
        "a numpy array or a ManifestRow"
    )


def _render_virtual(
    rows: Sequence[ManifestRow], size: tuple[int, int], device: str
) -> list[np.ndarray | str]:
    """Rendered pixels per row, or an error message for rows that cannot be rendered.

    All rows go to one `render_rows` call (it shares the work of a trajectory); if that call
    fails, each row is rendered alone so that one bad row only costs itself.
    """
    from retrieval.synth import render_rows  # the simulator is only needed for virtual rows

    try:
        rendered = render_rows(rows, device)
    except Exception as exc:  # rendering arbitrary parameters can fail in many ways
        if len(rows) == 1:
            return [f"{rows[0].describe()}: cannot render ({type(exc).__name__}: {exc})"]
        return [result for row in rows for result in _render_virtual([row], size, device)]
    return [_resized(Image.fromarray(pixels), size) for pixels in rendered]


def _pixels_or_error(item: Any, size: tuple[int, int]) -> np.ndarray | str:
    try:
        return _item_pixels(item, size)
    except (ImageLoadError, TypeError, ValueError) as exc:
        return str(exc)


def _load_stored(items: list[Any], size: tuple[int, int], threads: int) -> list[np.ndarray | str]:
    """`_pixels_or_error` of each item in order, spread over `threads` threads when > 1 (Pillow
    and numpy release the GIL while decoding and resizing)."""
    if threads <= 1 or len(items) <= 1:
        return [_pixels_or_error(item, size) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(_pixels_or_error, items, [size] * len(items)))


def prepare_pixels(
    items: Sequence[Any], size: tuple[int, int], render_device: str = "cpu", threads: int = 1
) -> tuple[list[np.ndarray | None], list[tuple[int, str]]]:
    """uint8 (H, W, 3) pixels of each item at `size` (None where it failed), and the failures.

    Files and in-memory images are decoded by `threads` threads; virtual manifest rows are
    rendered together on `render_device`. Failures are (position in `items`, message naming
    the file or row and the problem).
    """
    pixels: list[np.ndarray | None] = [None] * len(items)
    errors: list[tuple[int, str]] = []
    virtual = [i for i, item in enumerate(items) if _is_virtual(item)]
    stored = [i for i, item in enumerate(items) if not _is_virtual(item)]
    results = _load_stored([items[i] for i in stored], size, threads)
    if virtual:
        results += _render_virtual([items[i] for i in virtual], size, render_device)
    for index, result in zip(stored + virtual, results):
        if isinstance(result, str):
            errors.append((index, result))
        else:
            pixels[index] = result
    errors.sort()
    return pixels, errors


class PixelBatches(Dataset):
    """Batch `b` = the pixels of items `batches[b]`, loaded together (one render per batch).

    Returns {"pixels": uint8 [n_ok, H, W, 3], "ok": int64 item indices that loaded,
    "errors": [(item index, message)]}. Used by the embedder (consecutive batches) and the
    trainer (P x K batches drawn by its sampler). `threads`: see `decode_threads`.
    """

    def __init__(
        self,
        items: Sequence[Any],
        batches: Sequence[Sequence[int]],
        size: tuple[int, int],
        render_device: str = "cpu",
        threads: int = 1,
    ) -> None:
        self.items = items
        self.batches = batches
        self.size = size
        self.render_device = render_device
        self.threads = threads

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, batch_index: int) -> dict[str, Any]:
        indices = [int(i) for i in self.batches[batch_index]]
        pixels, errors = prepare_pixels([self.items[i] for i in indices], self.size,
                                        self.render_device, self.threads)
        ok = [position for position, value in enumerate(pixels) if value is not None]
        if ok:
            stacked = torch.from_numpy(np.stack([pixels[position] for position in ok]))
        else:
            stacked = torch.empty((0, *self.size, 3), dtype=torch.uint8)
        return {
            "pixels": stacked,
            "ok": torch.tensor([indices[position] for position in ok], dtype=torch.int64),
            "errors": [(indices[position], message) for position, message in errors],
        }


def _ignore_stop_signals(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process decides how to stop (the trainer
    # finishes its step and saves), and it shuts the workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def pixel_loader(
    dataset: Dataset,
    workers: int,
    pin_memory: bool = False,
    order: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader over whole batches (`order`: which batches, in which order; default all).

    It gets its own generator so that creating it never draws from torch's global RNG, which
    would otherwise make training depend on how often validation ran.
    """
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=order,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=_as_is,
        worker_init_fn=_ignore_stop_signals if workers else None,
        generator=torch.Generator(),
    )


def to_model_input(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [0, 1] on `device`.

    The permuted view of HWC pixels is channels_last already, the layout the networks run in
    on every device (see CHANNELS_LAST).
    """
    images = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return images.contiguous(memory_format=CHANNELS_LAST)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run with frozen BatchNorm statistics, then give the model back in its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the in-memory weights, for models that were never saved as a checkpoint."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        stored = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}:{stored.dtype}:{tuple(stored.shape)};".encode())
        digest.update(stored.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Embedder:
    """A network plus its input size: `embed(items)` gives unit float32 vectors.

    `fingerprint` names the model that made the vectors (see `model_fingerprint`), so an index
    can refuse vectors from another model.
    """

    def __init__(
        self,
        model: BlurAwareNet,
        config: dict[str, Any],
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if "image_size" not in config:
            raise ValueError("config must give 'image_size' [H, W], the input size of the model")
        height, width = config["image_size"]
        self.model = model
        self.config = dict(config)
        self.image_size = (int(height), int(width))
        self.dim = int(model.embedding_dim)
        self.fingerprint = model_fingerprint(self.config)
        self.device = model_device(model)
        self.batch_size = batch_size
        self.workers = default_workers() if workers is None else workers

    @classmethod
    def from_model(
        cls,
        model: BlurAwareNet,
        config: dict[str, Any],
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int | None = None,
    ) -> Embedder:
        """Embed with an in-memory model, on whatever device it sits (it is not moved).

        `config` needs "image_size". When it lacks the saved weights' hash (a model that was
        never saved), the fingerprint hashes the current in-memory weights instead: a snapshot
        that differs from the one the same weights get once saved to a checkpoint.
        """
        full = {**config, **model.architecture()}
        if "weights_sha256" not in full:
            full["weights_sha256"] = _state_digest(model)
        missing = [key for key in FINGERPRINT_KEYS if key not in full]
        if missing:
            raise ValueError(f"config lacks {missing}")
        return cls(model, full, batch_size=batch_size, workers=workers)

    def embed(self, items: Sequence[Any], progress: bool = False) -> EmbedResult:
        """Embed `items` in order; items that fail are listed in `errors` and skipped."""
        items = list(items)
        starts = range(0, len(items), self.batch_size)
        batches = [range(start, min(start + self.batch_size, len(items))) for start in starts]
        # Workers pay off only for files or renders and when there is more than one batch;
        # they would pickle in-memory images for nothing.
        use_workers = len(batches) > 1 and any(_needs_loading(item) for item in items)
        workers = self.workers if use_workers else 0
        render_device = str(self.device) if workers == 0 else "cpu"
        dataset = PixelBatches(items, batches, self.image_size, render_device, decode_threads(workers))
        loader = pixel_loader(dataset, workers, pin_memory=self.device.type == "cuda")

        outputs: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        ok: list[torch.Tensor] = []
        errors: list[tuple[int, str]] = []
        bar = tqdm(total=len(items), unit="img", desc="embed", disable=not progress)
        with eval_mode(self.model), torch.inference_mode():
            for batch in loader:
                errors.extend((int(index), str(message)) for index, message in batch["errors"])
                if len(batch["ok"]):
                    outputs.append(self._forward(batch["pixels"]))
                    ok.append(batch["ok"])
                bar.update(len(batch["ok"]) + len(batch["errors"]))
        bar.close()
        vectors, blur_values, boxes = zip(*outputs) if outputs else ((), (None,), (None,))
        return EmbedResult(
            vectors=np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32),
            ok=torch.cat(ok).numpy() if ok else np.zeros(0, dtype=np.int64),
            errors=errors,
            blur_values=_joined(blur_values),
            boxes=_joined(boxes),
        )

    def _forward(self, pixels: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        with autocast(self.device):
            output = self.model(to_model_input(pixels, self.device))
        return (_as_numpy(output.embedding), _as_numpy(output.blur_value), _as_numpy(output.box))


def _as_numpy(values: torch.Tensor | None) -> np.ndarray | None:
    return None if values is None else values.float().cpu().numpy()


def _joined(parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Batches of one head's output as one array; None when the model has no such head."""
    return None if any(part is None for part in parts) else np.concatenate(parts)


def load_embedder(
    model: str = "blur-aware",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
) -> Embedder:
    """An Embedder from a checkpoint directory or the name of a shipped checkpoint.

    `device` is 'auto' | 'cpu' | 'cuda'; one that torch cannot use raises DeviceUnavailableError.
    """
    target = torch.device(resolve_device(device))
    network, config = load_checkpoint(model, device=target)
    network = network.to(memory_format=CHANNELS_LAST)
    return Embedder(network, config, batch_size=batch_size, workers=workers)

