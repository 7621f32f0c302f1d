"""Where a program's log messages go: stderr, one short line each, above any progress bar.

Library modules only create loggers (`logging.getLogger(__name__)`) and each top package adds a
`NullHandler`, so code that imports the packages decides what is shown and where. Programs call
this module: the `blur-retrieval` entry point once per command, and each `serve --workers N`
worker process, which does not inherit its parent's logging set-up.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence

from tqdm import tqdm

FORMAT = "%(levelname)s: %(message)s"


class _AboveProgressBars(logging.Handler):
    """Writes through `tqdm.write` to the stderr of the moment, so a running bar is redrawn below
    the message (and a test runner that swaps stderr captures it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's contract: a failing handler reports, never raises
            self.handleError(record)


def log_to_stderr(level: int, names: Sequence[str]) -> Callable[[], None]:
    """Show records of the loggers `names` at `level` and above on stderr.

    Returns the function that removes the handler and restores the levels, so that a command run
    in-process (tests, notebooks) leaves logging as it found it.
    """
    handler = _AboveProgressBars()
    handler.setFormatter(logging.Formatter(FORMAT))
    loggers = [logging.getLogger(name) for name in names]
    restore = _set_levels(level, loggers)
    for logger in loggers:
        logger.addHandler(handler)

    def undo() -> None:
        for logger in loggers:
            logger.removeHandler(handler)
        restore()

    return undo


@contextlib.contextmanager
def log_level(level: int, names: Sequence[str]) -> Iterator[None]:
    """Set the loggers `names` to `level` for the duration (a command's `--quiet`)."""
    restore = _set_levels(level, [logging.getLogger(name) for name in names])
    try:
        yield
    finally:
        restore()


def _set_levels(level: int, loggers: Sequence[logging.Logger]) -> Callable[[], None]:
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)

    def restore() -> None:
        for logger, previous in zip(loggers, before):
            logger.setLevel(previous)

    return restore
