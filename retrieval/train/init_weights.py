"""Start a run from a trained checkpoint's weights instead of from scratch (`train --init-from`).

Fine-tuning a shipped model on new appearance (photographs, a user's own footage) costs a
fraction of training it again. The network must be built exactly as the checkpoint's (same
method heads, backbone, head, sizes); the classification head is always new, because its
classes are this run's training instances.
"""

from __future__ import annotations

from pathlib import Path

from retrieval.model import BlurAwareNet
from retrieval.model.checkpoint import CheckpointError, load_checkpoint, model_fingerprint
from retrieval.train.errors import TrainError


def start_from_checkpoint(model: BlurAwareNet, checkpoint: str | Path) -> str:
    """Copy the checkpoint's weights into `model`; returns the checkpoint's model fingerprint."""
    try:
        trained, config = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise TrainError(f"--init-from: {exc}") from exc
    own, found = model.state_dict(), trained.state_dict()
    missing, unexpected = sorted(set(own) - set(found)), sorted(set(found) - set(own))
    reshaped = sorted(key for key in set(own) & set(found) if own[key].shape != found[key].shape)
    if missing or unexpected or reshaped:
        first = (missing or unexpected or reshaped)[0]
        raise TrainError(
            f"--init-from {checkpoint}: its network differs from this run's ({len(missing)} "
            f"layers missing, {len(unexpected)} extra, {len(reshaped)} of another shape, e.g. "
            f"{first}); give the method, backbone, head and sizes it was trained with")
    model.load_state_dict({key: value.to(own[key].dtype) for key, value in found.items()})
    return model_fingerprint(config)
