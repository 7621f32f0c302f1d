"""What every command does the same way: report a model that cannot be loaded, and answer errors
in JSON when `--json` was asked for.

Shared by the index commands and the benchmark commands (which may import the index layer), so
a wrong `--model` reads the same and exits 2 everywhere.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from indexer.sources import printable


@contextlib.contextmanager
def model_load_errors(model: str, option: str = "--model", hint: str | None = None
                      ) -> Iterator[None]:
    """Loading `model` inside this block fails as a usage error (exit 2) saying what to pass.

    `option` is the option the advice tells to change; `hint` replaces the advice when the
    name came from somewhere else (an index manifest). Imported on entry: only a model load needs torch.
    """
    from retrieval.devices import DeviceUnavailableError
    from retrieval.model.checkpoint import CheckpointError, available_checkpoints

    try:
        yield
    except DeviceUnavailableError as error:
        raise click.UsageError(str(error)) from error
    except (CheckpointError, OSError) as error:
        shipped = available_checkpoints()
        advice = hint or (f"pass {option} a checkpoint folder (config.json and model.safetensors) "
                          f"or a shipped name: {', '.join(shipped) or 'none installed'}")
        if Path(model).is_dir() or model in shipped:
            problem = f"model {model!r} cannot be loaded: {error}"
        else:
            problem = f"model {model!r} is neither a checkpoint folder nor a shipped name"
        raise click.UsageError(printable(f"{problem}; {advice}")) from error


def echo_json_error(message: str) -> None:
    """The JSON answer of a command that failed: `{"error": message}` on stdout."""
    click.echo(json.dumps({"error": printable(message)}))


class JsonErrorsCommand(click.Command):
    """A command with a `--json` flag: under it, an error that ends the command (a usage error,
    including one click finds while parsing, or any other reported failure) also prints
    `{"error": ...}` on stdout, so a script reading stdout gets JSON either way. The usual
    message still goes to stderr and the exit status is unchanged."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as error:
            if wants_json:
                echo_json_error(error.format_message())
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            if ctx.params.get("as_json"):
                echo_json_error(error.format_message())
            raise

