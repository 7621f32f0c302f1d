"""Simulator settings that every rendered pixel depends on; stored with each data set."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

# Fields that once existed, were never used and were always written empty.
_RETIRED_EMPTY_KEYS = ("extra",)
PHOTO_SPLITS = ("train", "heldout")
# Written only when photos are used, so the settings (and every fingerprint made from them) of
# procedural data sets stay what they were before photos existed.
_PHOTO_KEYS = ("photos", "photo_split", "photo_share")


@dataclass(frozen=True)
class SimConfig:
    """Image size, motion sampling and exposure schedule.

    The published data used a 24-step linear motion imaged with exposures of 0..10
    steps; `substeps` instant frames per step make the blur streak continuous (0 picks,
    per trajectory, a frame about every 1.5 pixels of motion).
    """

    height: int = 96
    width: int = 128
    seed: int = 0
    steps: int = 24
    exposures: int = 11
    substeps: int = 0
    object_radius: tuple[float, float] = (0.17, 0.26)  # fraction of min(height, width)
    streak_ratio: tuple[float, float] = (0.35, 3.2)  # longest streak / object diameter
    # How streak lengths spread over `streak_ratio`: 1 favours long streaks (square root of a
    # uniform draw), 0 spreads them uniformly; in between mixes the two.
    fast_bias: float = 1.0
    max_rotation_deg: float = 30.0  # per axis, over the whole `steps`-step motion
    depth_change: float = 0.25  # relative scale change over the whole motion
    # Natural-image appearance (`photos.py`): "" keeps every object and background procedural;
    # "skimage" (scikit-image's sample photographs) or a folder of pictures textures a share of
    # the objects and backgrounds with photos of one split of that source.
    photos: str = ""
    photo_split: str = "train"
    photo_share: float = 0.5

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"image size must be at least 16x16, got {self.height}x{self.width}")
        if not 1 <= self.exposures <= self.steps + 1:
            raise ValueError("exposures must be between 1 and steps + 1")
        if self.photo_split not in PHOTO_SPLITS:
            raise ValueError(f"photo_split must be one of {PHOTO_SPLITS}, got {self.photo_split!r}")
        if not 0.0 <= self.photo_share <= 1.0:
            raise ValueError(f"photo_share must be in [0, 1], got {self.photo_share}")

    @property
    def crop_size(self) -> int:
        """Side of the square window each instant frame of the object is rendered in."""
        largest_radius = self.object_radius[1] * min(self.height, self.width)
        return 2 * math.ceil(largest_radius * (1 + self.depth_change) * 1.05) + 4

    def to_dict(self) -> dict:
        values = asdict(self)
        if not self.photos:
            for key in _PHOTO_KEYS:
                del values[key]
        return values

    @classmethod
    def from_dict(cls, data: dict) -> SimConfig:
        """Settings as stored by `to_dict`; keys this version does not know are refused.

        Dropping them would render virtual rows with default settings, so the pixels would
        silently differ from those of the version that wrote the data set. An empty "extra"
        is accepted: versions before its removal wrote that unused field into every data set.
        """
        if not isinstance(data, dict):
            raise ValueError(f"simulator settings must be a JSON object, got {type(data).__name__}")
        known = {field.name for field in fields(cls)}
        unknown = sorted(key for key in data if key not in known
                         and not (key in _RETIRED_EMPTY_KEYS and data[key] == {}))
        if unknown:
            raise ValueError(f"unknown simulator settings {unknown} (written by a newer version?); "
                             f"this version knows {sorted(known)}")
        values = {key: value for key, value in data.items() if key in known}
        for key in ("object_radius", "streak_ratio"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
