"""The single `blur-retrieval` entry point: it assembles the commands of `benchmark.commands`.

The commands sit on top of the dependency chain (benchmark -> indexer -> retrieval), so
importing every package here never points a dependency the wrong way, and they import only
light modules until a command runs, so `--help` answers without torch. It is also the one
place that decides which log messages are shown: INFO and above on stderr, DEBUG with `-v`,
WARNING and above under a command's `-q`. Results stay on stdout, so `query --json` prints
nothing but JSON there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any

import click

from benchmark.commands.bench import bench
from benchmark.commands.demo import demo_command
from benchmark.commands.index import index_group, query_command
from benchmark.commands.serve import serve_command
from benchmark.commands.synth import synth
from benchmark.commands.train import train_command
from benchmark.commands.train_dense import train_dense_command
from benchmark.commands.video_set import video_set_command
from retrieval import __version__
from retrieval.cli_logging import log_level, log_to_stderr

COMMANDS = [synth, train_command, train_dense_command, video_set_command, index_group,
            query_command, serve_command, bench, demo_command]

PACKAGE_LOGGERS = ("retrieval", "indexer", "benchmark")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="blur-retrieval")
@click.option("-v", "--verbose", is_flag=True, help="Also print debug messages.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Find images of moving objects from motion-blurred query photos."""
    ctx.call_on_close(log_to_stderr(logging.DEBUG if verbose else logging.INFO, PACKAGE_LOGGERS))


def _quiet_hides_messages(command: click.Command) -> None:
    """Make `-q/--quiet` of `command` (and of a group's sub-commands) also hide messages below
    WARNING; each command already turns its progress bars off itself."""
    if isinstance(command, click.Group):
        for sub_command in command.commands.values():
            _quiet_hides_messages(sub_command)
    callback = command.callback
    if callback is None or not any(param.name == "quiet" for param in command.params):
        return

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        quiet = log_level(logging.WARNING, PACKAGE_LOGGERS) if kwargs["quiet"] else contextlib.nullcontext()
        with quiet:
            return callback(*args, **kwargs)

    command.callback = run


for _command in COMMANDS:
    _quiet_hides_messages(_command)
    main.add_command(_command)


if __name__ == "__main__":
    main()
