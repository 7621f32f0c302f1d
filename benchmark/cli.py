"""The single `blur-retrieval` entry point: it assembles the commands each package owns.

It lives in `benchmark` because that package sits on top of the dependency chain
(benchmark -> indexer -> retrieval), so importing the other packages' commands here
never points a dependency the wrong way.
"""

from __future__ import annotations

import click

from benchmark.bench_cli import COMMANDS as BENCHMARK_COMMANDS
from benchmark.demo import demo_command
from indexer.cli import COMMANDS as INDEXER_COMMANDS
from retrieval import __version__
from retrieval.cli import COMMANDS as RETRIEVAL_COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="blur-retrieval")
def main() -> None:
    """Find images of moving objects from motion-blurred query photos."""


for _command in [*RETRIEVAL_COMMANDS, *INDEXER_COMMANDS, *BENCHMARK_COMMANDS, demo_command]:
    main.add_command(_command)


if __name__ == "__main__":
    main()
