"""The blur-aware network, its training losses, and the checkpoint format.

Typical use::

    spec = method_spec("blur-aware")
    net = BlurAwareNet(blur_head=spec.heads.blur_head, loc_head=spec.heads.loc_head)
    head = MarginSoftmaxHead(net.embedding_dim, num_classes=num_train_instances)
    out = net(images)                                   # images: [B, 3, H, W] in [0, 1]
    loss, parts = total_loss(out, head(out.embedding, batch["instance"]), batch,
                             LossConfig(enabled=spec.losses))
    save_checkpoint(run_dir, net, {"image_size": [H, W], "method": "blur-aware", ...})
    net, config = load_checkpoint(run_dir)              # or a shipped name: "blur-aware"
"""

from retrieval.model.batch_softmax import batch_softmax_loss
from retrieval.model.checkpoint import (
    CheckpointError,
    available_checkpoints,
    load_checkpoint,
    model_fingerprint,
    read_checkpoint_config,
    resolve_checkpoint,
    save_checkpoint,
)
from retrieval.model.gem import GeM
from retrieval.model.losses import (
    LOSS_NAMES,
    METHODS,
    HeadFlags,
    LossConfig,
    LossWeights,
    MethodSpec,
    blur_l1,
    box_l1,
    contrastive_loss,
    contrastive_pair_loss,
    margin_softmax_loss,
    method_spec,
    mine_pairs,
    spec_for_losses,
    total_loss,
)
from retrieval.model.network import (
    DEFAULT_BACKBONE,
    DEFAULT_CROP_SIZE,
    HEADS,
    BackboneWeightsError,
    BlurAwareNet,
    MarginSoftmaxHead,
    NetOutput,
    count_parameters,
    load_backbone_weights,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_CROP_SIZE",
    "HEADS",
    "LOSS_NAMES",
    "METHODS",
    "BackboneWeightsError",
    "BlurAwareNet",
    "CheckpointError",
    "GeM",
    "HeadFlags",
    "LossConfig",
    "LossWeights",
    "MarginSoftmaxHead",
    "MethodSpec",
    "NetOutput",
    "available_checkpoints",
    "batch_softmax_loss",
    "blur_l1",
    "box_l1",
    "contrastive_loss",
    "contrastive_pair_loss",
    "count_parameters",
    "load_backbone_weights",
    "load_checkpoint",
    "margin_softmax_loss",
    "method_spec",
    "mine_pairs",
    "model_fingerprint",
    "read_checkpoint_config",
    "resolve_checkpoint",
    "save_checkpoint",
    "spec_for_losses",
    "total_loss",
]
