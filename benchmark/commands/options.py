"""Option parsing shared by every package's commands (sizes, devices, output paths)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import click

from retrieval import devices
from retrieval.fileio import UnwritablePathError, check_writable_folder

PathValue = str | os.PathLike | None

_SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")


def parse_size(ctx: click.Context | None, param: click.Parameter | None, value: str | None):
    """Click callback for HxW options."""
    if value is None:
        return None
    match = _SIZE_PATTERN.match(value.strip().lower())
    if not match:
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 96x128, got {value!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 16 or width < 16 or height > 4096 or width > 4096:
        raise click.BadParameter(f"each side must be between 16 and 4096 pixels, got {value}")
    return height, width


_MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30,
                 "gb": 2**30, "t": 2**40, "tb": 2**40}


def parse_memory(ctx: click.Context | None, param: click.Parameter | None, value: str | None):
    """Click callback for memory sizes: bytes, or a number with K/M/G/T (powers of 1024)."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", value.lower())
    if not match or match.group(2) not in _MEMORY_UNITS:
        raise click.BadParameter(f"expected a size such as 500MB or 2GB, got {value!r}")
    size = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])
    if size <= 0:
        raise click.BadParameter(f"must be positive, got {value!r}")
    return size


def resolve_device(device: str) -> str:
    """torch's device for a --device value; a GPU that is not there is a usage error (exit 2)."""
    try:
        return devices.resolve_device(device)
    except devices.DeviceUnavailableError as error:
        raise click.BadParameter(str(error), param_hint="--device") from error


def writable_folder(ctx: click.Context | None, param: click.Parameter | None,
                    value: PathValue) -> PathValue:
    """Click callback for an output folder: one that cannot be created or written in is a usage
    error (exit 2) while the options are read, before any work."""
    if value is not None:
        try:
            check_writable_folder(value)
        except UnwritablePathError as error:
            raise click.BadParameter(str(error)) from error
    return value


def writable_file(ctx: click.Context | None, param: click.Parameter | None,
                  value: PathValue) -> PathValue:
    """Click callback for an output file: its folder must be one `writable_folder` accepts."""
    if value is not None:
        try:
            check_writable_folder(Path(value).parent)
        except UnwritablePathError as error:
            raise click.BadParameter(f"cannot write {value}: {error}") from error
    return value


def validation_set_options(command: Callable) -> Callable:
    """The CHECKPOINT argument and the --data, --queries, --distractors options of the diagnosis
    scripts (scripts/diagnose_*.py), so that every one picks its validation set the same way."""
    decorators = (
        click.argument("checkpoint"),
        click.option("--data", "data_dir", default="data/small", show_default=True,
                     type=click.Path(exists=True, file_okay=False, path_type=Path)),
        click.option("--queries", default=1000, show_default=True, type=click.IntRange(min=1)),
        click.option("--distractors", default=10000, show_default=True,
                     type=click.IntRange(min=0)),
    )
    for decorator in reversed(decorators):
        command = decorator(command)
    return command
