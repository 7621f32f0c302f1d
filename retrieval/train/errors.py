"""What can stop a training run before it starts; the CLI turns these into usage errors."""

from __future__ import annotations


class TrainError(ValueError):
    """A training run that cannot start as asked; the message names the file or option."""


class TrainDataError(TrainError):
    """The data set cannot feed the requested training (no rows, missing labels, too few)."""


class ResumeError(TrainError):
    """A saved training state that is missing, unreadable, or from a different run."""


class DivergedError(RuntimeError):
    """The loss stopped being a finite number: training cannot usefully go on."""
