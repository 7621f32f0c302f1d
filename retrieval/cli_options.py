"""Option parsing shared by every package's commands (sizes, devices)."""

from __future__ import annotations

import re

import click

from retrieval import devices

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


def resolve_device(device: str) -> str:
    """torch's device for a --device value; a GPU that is not there is a usage error (exit 2)."""
    try:
        return devices.resolve_device(device)
    except devices.DeviceUnavailableError as error:
        raise click.BadParameter(str(error), param_hint="--device") from error
