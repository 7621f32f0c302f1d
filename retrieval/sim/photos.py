"""Natural-image appearance: objects textured with photographs, photographs as backgrounds.

The procedural textures (stripes, checks, dots over flat paint) and fractal backgrounds have
none of the statistics of real surfaces, and a model trained only on them did not transfer to
real-photo textures. With `SimConfig.photos` set, a share of the instances wear a region of a
photograph (chosen, placed, scaled and turned per instance, deterministically) and a share of
the trajectories' backgrounds are crops of photographs.

Photos come from scikit-image's sample photographs ("skimage", the optional extra `photos`)
or any folder of pictures. Each source is split once into train and held-out photos, so a
model can be trained on some and measured on objects and scenes made of the others. A layer
bank records its pictures' hash and is rebuilt when one changes; a data set's virtual rows
(val distractors) are rendered from the pictures again, so a folder's pictures must not change
while data sets made from it are in use.

The texture is mapped triplanarly: a surface point takes the photo coordinates of its two
object-frame coordinates across the axis its normal points along most, so every face of every
shape gets an undistorted piece of the photo without a parametrisation per shape.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from retrieval.fileio import file_sha256
from retrieval.sim.backgrounds import render_background
from retrieval.sim.config import SimConfig
from retrieval.sim.objects import object_spec

SKIMAGE = "skimage"
# scikit-image's photographs of real scenes (its drawings, charts and test patterns are left out).
# motorcycle_right is left out too: it is the other view of motorcycle_left's stereo pair, which
# would put one scene in both splits.
_SKIMAGE_PHOTOS = {
    "train": ("astronaut.png", "brick.png", "cell.png", "chelsea.png", "coins.png", "grass.png",
              "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "retina.jpg"),
    "heldout": ("camera.png", "coffee.png", "gravel.png", "ihc.png", "rocket.jpg"),
}
HELDOUT_EVERY = 3  # a folder's pictures, sorted by name: every third (2, 5, 8, ...) is held out
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TEXTURE_SIDE = 128  # photos are resampled to this square for texturing (about 2 texels a pixel)
BACKGROUND_SIDE = 512  # longest side photos are kept at for backgrounds
TEXTURE_SCALE = (0.2, 0.45)  # photo side fraction one object radius spans
BACKGROUND_CROP = (0.35, 1.0)  # background crops: fraction of the photo's shorter side
_FACE_OFFSETS = ((0.0, 0.0), (0.31, 0.57), (0.73, 0.19))  # photo shift of each projection axis


class PhotoError(ValueError):
    """A photo source that cannot be used; the message names the folder or file."""


@dataclass(frozen=True)
class PhotoSet:
    names: tuple[str, ...]
    texture: torch.Tensor  # float32 [N, S, S, 3] linear light (display value squared)
    grey: tuple[bool, ...]  # photo had no colour: instances tint it with their own paint
    images: tuple[np.ndarray, ...]  # uint8 (H, W, 3) display values, for backgrounds


@dataclass(frozen=True)
class PhotoMapping:
    """How one instance wears its photo."""

    index: int  # into the split's photos
    origin: tuple[float, float]  # photo coordinates (0..1) of the object-frame origin
    scale: float  # photo side fraction per unit of object-frame length
    angle: float  # turn of the photo on the surface, radians
    tint: tuple[float, float, float]  # multiplies the photo's linear colour


def skimage_folder() -> Path:
    """Where scikit-image keeps its sample photographs (found without importing it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise PhotoError("photos 'skimage' need scikit-image: pip install 'blur-retrieval[photos]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def photo_files(source: str, split: str) -> list[Path]:
    """The pictures of one split of a source, in a fixed order."""
    if source == SKIMAGE:
        folder = skimage_folder()
        files = [folder / name for name in _SKIMAGE_PHOTOS[split]]
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise PhotoError(f"scikit-image's sample photos are incomplete: {missing[0]} is missing")
        return files
    folder = Path(source)
    if not folder.is_dir():
        raise PhotoError(f"{folder}: photos must be '{SKIMAGE}' or a folder of pictures")
    every = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    held_out = split == "heldout"
    files = [p for i, p in enumerate(every) if (i % HELDOUT_EVERY == HELDOUT_EVERY - 1) == held_out]
    if not files:
        raise PhotoError(f"{folder}: no {split} photos among its {len(every)} pictures (every "
                         f"{HELDOUT_EVERY}rd picture by name is held out, the others train)")
    return files


def photo_fingerprint(source: str, split: str) -> str:
    """sha256 over the names and bytes of a split's pictures. What is rendered from them once
    and kept (the layer bank) records it, so a picture changed under it makes it be rebuilt."""
    digest = hashlib.sha256()
    for path in photo_files(source, split):
        try:
            content = file_sha256(path)
        except OSError as exc:
            raise PhotoError(f"{path}: cannot be read ({exc})") from exc
        digest.update(f"{path.name}\0{content}\0".encode())
    return digest.hexdigest()


def _open_photo(path: Path) -> tuple[np.ndarray, bool]:
    """Display RGB (longest side at most BACKGROUND_SIDE) and whether the picture is grey."""
    try:
        with Image.open(path) as image:
            grey = image.mode in ("1", "L", "LA", "I", "I;16", "F")
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise PhotoError(f"{path}: not a readable picture ({exc})") from exc
    if min(rgb.size) < 16:
        raise PhotoError(f"{path}: {rgb.size[0]}x{rgb.size[1]} is too small for a texture")
    rgb.thumbnail((BACKGROUND_SIDE, BACKGROUND_SIDE), Image.LANCZOS)
    pixels = np.asarray(rgb, dtype=np.uint8)
    grey = grey or bool((pixels == pixels[..., :1]).all())
    pixels.setflags(write=False)
    return pixels, grey


def _square_texture(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(pixels[top:top + side, left:left + side])
    return np.asarray(square.resize((TEXTURE_SIDE, TEXTURE_SIDE), Image.LANCZOS), dtype=np.float32)


@lru_cache(maxsize=8)
def load_photos(source: str, split: str) -> PhotoSet:
    """The photos of one split of a source, decoded once per process."""
    files = photo_files(source, split)
    opened = [_open_photo(path) for path in files]
    texture = np.stack([_square_texture(pixels) for pixels, _ in opened]) / 255.0
    return PhotoSet(tuple(path.name for path in files), torch.from_numpy(texture * texture),
                    tuple(grey for _, grey in opened), tuple(pixels for pixels, _ in opened))


@lru_cache(maxsize=65536)
def instance_photo(config: SimConfig, category: int, instance: int) -> PhotoMapping | None:
    """The photo instance `instance` of `category` wears, or None for its procedural texture.

    Every draw is made whatever the share, so an instance that wears a photo at one share
    wears the same one at any larger share.
    """
    if not config.photos:
        return None
    rng = np.random.default_rng([5, category, instance])
    wears_photo = rng.random() < config.photo_share
    photos = load_photos(config.photos, config.photo_split)
    index = int(rng.integers(len(photos.names)))
    origin = (float(rng.random()), float(rng.random()))
    scale = float(rng.uniform(*TEXTURE_SCALE))
    angle = float(rng.uniform(0.0, 2 * math.pi))
    if not wears_photo:
        return None
    paint = object_spec(category, instance).colors[0]
    tint = tuple(float(c) for c in paint / paint.max()) if photos.grey[index] else (1.0, 1.0, 1.0)
    return PhotoMapping(index, origin, scale, angle, tint)


@dataclass(frozen=True)
class PhotoRows:
    """Per-row photo parameters of a render batch (rows without a photo have index -1)."""

    texture: torch.Tensor  # the split's texture atlas, shared by all rows
    index: torch.Tensor  # int64 [B]
    mapping: torch.Tensor  # float32 [B, 5]: origin u, origin v, scale, cos, sin
    tint: torch.Tensor  # float32 [B, 3]

    def rows(self, start: int, stop: int) -> PhotoRows:
        return PhotoRows(self.texture, self.index[start:stop], self.mapping[start:stop],
                         self.tint[start:stop])


def photo_rows(config: SimConfig, objects: list[tuple[int, int]], device: torch.device
               ) -> PhotoRows | None:
    """Photo parameters of each (category, instance) row; None when no row wears a photo."""
    mappings = [instance_photo(config, category, instance) for category, instance in objects]
    if all(m is None for m in mappings):
        return None
    none = PhotoMapping(-1, (0.0, 0.0), 0.0, 0.0, (1.0, 1.0, 1.0))
    mappings = [none if m is None else m for m in mappings]
    texture = load_photos(config.photos, config.photo_split).texture.to(device)
    mapping = [(*m.origin, m.scale, math.cos(m.angle), math.sin(m.angle)) for m in mappings]
    return PhotoRows(texture, torch.tensor([m.index for m in mappings], device=device),
                     torch.tensor(mapping, dtype=torch.float32, device=device),
                     torch.tensor([m.tint for m in mappings], dtype=torch.float32, device=device))


def _mirror(coordinate: torch.Tensor) -> torch.Tensor:
    """Photo coordinates folded into [0, 1] by mirroring, so the texture has no seams."""
    folded = coordinate - 2.0 * torch.floor(coordinate * 0.5)
    return torch.where(folded > 1.0, 2.0 - folded, folded)


def photo_texture(rows: PhotoRows, point: torch.Tensor, normal: torch.Tensor,
                  procedural: torch.Tensor) -> torch.Tensor:
    """Linear RGB [B, 3, C, C]: the photo at each object-frame `point` [B, C, C, 3] of the rows
    that wear one, `procedural` [B, 3, C, C] elsewhere. Nearest texel: exact, so a row renders
    to the same bits alone or in any batch."""
    size = abs(normal)
    across_x = (size[..., 0] >= size[..., 1]) & (size[..., 0] >= size[..., 2])
    across_y = ~across_x & (size[..., 1] >= size[..., 2])
    u = torch.where(across_x, point[..., 1], torch.where(across_y, point[..., 2], point[..., 0]))
    v = torch.where(across_x, point[..., 2], torch.where(across_y, point[..., 0], point[..., 1]))
    face_u = torch.where(across_x, _FACE_OFFSETS[0][0],
                         torch.where(across_y, _FACE_OFFSETS[1][0], _FACE_OFFSETS[2][0]))
    face_v = torch.where(across_x, _FACE_OFFSETS[0][1],
                         torch.where(across_y, _FACE_OFFSETS[1][1], _FACE_OFFSETS[2][1]))
    m = rows.mapping[:, None, None, :]
    turned_u = (u * m[..., 3] - v * m[..., 4]) * m[..., 2] + m[..., 0] + face_u
    turned_v = (u * m[..., 4] + v * m[..., 3]) * m[..., 2] + m[..., 1] + face_v
    side = rows.texture.shape[1]
    x = (_mirror(turned_u) * (side - 1)).round().long()
    y = (_mirror(turned_v) * (side - 1)).round().long()
    index = rows.index.clamp(min=0)[:, None, None]
    texels = rows.texture[index, y, x] * rows.tint[:, None, None, :]  # [B, C, C, 3]
    wears = (rows.index >= 0)[:, None, None, None]
    return torch.where(wears, texels.permute(0, 3, 1, 2), procedural)


@lru_cache(maxsize=256)
def photo_background(source: str, split: str, seed: int, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3): a crop of one of the split's photos, its place and size drawn from `seed`."""
    photos = load_photos(source, split)
    rng = np.random.default_rng([17, seed])
    pixels = photos.images[int(rng.integers(len(photos.images)))]
    rows, cols = pixels.shape[:2]
    crop_h = min(rows, cols * height / width) * rng.uniform(*BACKGROUND_CROP)
    crop_w = crop_h * width / height
    top, left = rng.uniform(0, rows - crop_h), rng.uniform(0, cols - crop_w)
    image = Image.fromarray(pixels).resize((width, height), Image.BICUBIC,
                                           box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    result = np.asarray(image, dtype=np.uint8)
    result.setflags(write=False)
    return result


def trajectory_background(config: SimConfig, seed: int, height: int, width: int) -> np.ndarray:
    """The background of seed `seed`: a photo crop for a share of the seeds when photos are on,
    else the procedural one."""
    if config.photos and np.random.default_rng([19, seed]).random() < config.photo_share:
        return photo_background(config.photos, config.photo_split, seed, height, width)
    return render_background(seed, height, width)
