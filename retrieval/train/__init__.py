"""Training the blur-aware network: data and P x K sampling, validation, resumable loop.

Typical use::

    outcome = train(TrainSettings(data_dir=Path("data"), out_dir=Path("runs/blur-aware")))
    outcome.checkpoint  # folder with the best model by validation mAP@100, for load_checkpoint

Command line: `blur-retrieval train DATA_DIR --out CKPT_DIR` (see `benchmark.commands.train`).
"""

from retrieval.fileio import file_sha256
from retrieval.train.data import PKSampler, TrainingSet, select_training_rows
from retrieval.train.errors import DivergedError, ResumeError, TrainDataError, TrainError
from retrieval.train.settings import SCHEDULES, TrainOutcome, TrainSettings
from retrieval.train.state import LOG_FILENAME, STATE_FILENAME, TrainLog, load_train_state
from retrieval.train.trainer import Trainer, train
from retrieval.train.validation import ValidationSet, build_validation_set, evaluate

__all__ = [
    "LOG_FILENAME",
    "SCHEDULES",
    "STATE_FILENAME",
    "DivergedError",
    "PKSampler",
    "ResumeError",
    "TrainDataError",
    "TrainError",
    "TrainLog",
    "TrainOutcome",
    "TrainSettings",
    "Trainer",
    "TrainingSet",
    "ValidationSet",
    "build_validation_set",
    "evaluate",
    "file_sha256",
    "load_train_state",
    "select_training_rows",
    "train",
]
