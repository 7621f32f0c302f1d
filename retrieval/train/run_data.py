"""What a run trains and validates on: the training rows or composite stream, the validation set
(with its virtual distractors), the fingerprint that ties a resumed run to the same data, and
the sampler that turns the training rows into P x K batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrieval.fileio import file_sha256
from retrieval.manifest import ManifestError, manifest_items
from retrieval.model import MethodSpec
from retrieval.sim.objects import INSTANCE_STRIDE
from retrieval.synth import SETTINGS_NAME as SYNTH_SETTINGS
from retrieval.train.data import PKSampler, TrainingSet, select_training_rows
from retrieval.train.errors import TrainDataError
from retrieval.train.lookalike import LookalikeSampler
from retrieval.train.settings import TrainSettings
from retrieval.train.stream import CompositeStream, open_composite_stream
from retrieval.train.val_distractors import with_validation_distractors
from retrieval.train.validation import ValidationSet, build_validation_set


@dataclass
class RunData:
    training: TrainingSet
    stream: CompositeStream | None  # None: the training rows are the data set's image files
    validation: ValidationSet | None  # None: the data set has no val rows
    fingerprint: str  # of the simulator's settings (stream) or of the manifest file


def load_run_data(settings: TrainSettings, spec: MethodSpec) -> RunData:
    """Open the data set as the settings ask; a data set that cannot serve them is refused
    (TrainDataError naming its manifest) before any model is built."""
    try:
        items, table = manifest_items(settings.data_dir)
    except ManifestError as exc:
        raise TrainDataError(str(exc)) from exc
    manifest = Path(settings.data_dir)
    manifest = manifest / "manifest.parquet" if manifest.is_dir() else manifest
    sharp_only = settings.method == "sharp-only"
    stream = None
    synthesized = (manifest.parent / SYNTH_SETTINGS).is_file()
    wider = settings.train_instances is not None or settings.train_trajectories is not None
    if not synthesized and (wider or settings.val_distractors or settings.photos):
        raise TrainDataError(f"{manifest}: more training instances, photos and validation "
                             "distractors need a data set written by `synth` (its simulator "
                             "settings render them)")
    if synthesized:
        training, stream, fingerprint = open_composite_stream(
            manifest, settings.image_size, sharp_only, settings.seed,
            progress=settings.progress, instances=settings.train_instances,
            trajectories=settings.train_trajectories, photos=settings.photos,
            photo_share=settings.photo_share)
    else:
        training = select_training_rows(
            items, table, manifest, sharp_only=sharp_only,
            needs_blur="be" in spec.losses, needs_box="loc" in spec.losses)
        fingerprint = file_sha256(manifest)
    if settings.instances_per_batch > training.num_classes:
        raise TrainDataError(
            f"{manifest}: P={settings.instances_per_batch} instances per batch, but only "
            f"{training.num_classes} training instances have images from two trajectories")
    validation = with_validation_distractors(
        build_validation_set(items, table, manifest, settings.max_val_queries), manifest,
        settings.val_distractors, settings.image_size, settings.progress)
    return RunData(training, stream, validation, fingerprint)


def batch_sampler(settings: TrainSettings, training: TrainingSet) -> PKSampler:
    """P x K batches at random, or as P/Q categories x Q instances (look-alike batches)."""
    if settings.instances_per_category == 1:
        return PKSampler(training.classes, training.trajectories, settings.instances_per_batch,
                         settings.images_per_instance, settings.seed)
    categories = training.instance_ids // INSTANCE_STRIDE
    try:
        return LookalikeSampler(training.classes, training.trajectories, categories,
                                settings.instances_per_batch, settings.images_per_instance,
                                settings.instances_per_category, settings.seed)
    except ValueError as exc:
        raise TrainDataError(f"{training.manifest}: {exc}") from exc
