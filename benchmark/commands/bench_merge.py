"""`blur-retrieval bench merge`: one table from `bench map` runs of the same benchmark set."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.commands.options import writable_folder


@click.command("merge")
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              callback=writable_folder,
              help="Folder for the merged report.json, report.md, plot and grids; may be one of "
                   "REPORTS (its stale grids are removed).")
def merge_command(reports: tuple[Path, ...], out: Path) -> None:
    """Merge `bench map` REPORTS (output folders or their report.json) into one report.

    After one model changes, re-measure only it (`bench map --methods NAME`) and merge its run
    into the published report: the other rows are kept, and the rows and grids of NAME are
    replaced (later REPORTS win). Reports of different benchmark sets (data, distractors,
    simulator, seeds, index factory, re-ranking) are refused.
    """
    from benchmark.report import terminal_table
    from benchmark.report_merge import ReportMergeError, read_source, write_merged

    try:
        merged = write_merged([read_source(path) for path in reports], out)
    except ReportMergeError as error:
        raise click.ClickException(str(error)) from error
    click.echo(terminal_table(merged, "map100"))
    click.echo(f"wrote {out / 'report.md'}, {out / 'report.json'}")
