"""The blur-aware embedding network and the margin-softmax training head.

The published method (ECCV 2024) puts a blur-estimation and a localisation branch next to the
descriptor branch and feeds their hidden layers into the final embedding, so the descriptor
"knows" how blurred the object is and where its streak lies. The paper's 2048-channel ResNet-50
sizes are scaled here to the backbone's C channels (C -> C, C -> C/2 -> C/8 -> out), so any timm
CNN can serve as the backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file as load_safetensors
from torch import nn

from retrieval.model import plainnet  # noqa: F401  (registers the plain backbones in timm)
from retrieval.model.crop import crop_squares, square_crop_boxes
from retrieval.model.gem import GeM

DEFAULT_BACKBONE = "plainnet_s"
HEADS = ("crop", "global")
# What the blur branch pools: the map the localisation branch reads (the whole image; the
# published layout), or, crop head only, the descriptor backbone's map of the object's crop.
BLUR_INPUTS = ("image", "crop")
DEFAULT_CROP_SIZE = 48
LOCATOR_SCALE = 0.5  # the crop head finds the streak on the image at half resolution
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneWeightsError(ValueError):
    """A local backbone weights file is missing, unreadable or does not fit the backbone."""


@dataclass(frozen=True)
class NetOutput:
    """What one forward pass predicts.

    embedding: [B, D] float32, unit L2 norm: the retrieval vector.
    blur_value: [B] in (0, 1), the predicted v = 1 - blur severity; None without a blur head.
    box: [B, 4] in (0, 1), the normalised (cx, cy, w, h) of the blur streak; None without a
        localisation head.
    """

    embedding: torch.Tensor
    blur_value: torch.Tensor | None
    box: torch.Tensor | None


class AuxiliaryBranch(nn.Module):
    """GeM -> C/2 hidden -> C/8 -> `out_dim` sigmoid outputs.

    The hidden C/2 activation is returned too because the final embedding consumes it.
    """

    def __init__(self, in_channels: int, out_dim: int) -> None:
        super().__init__()
        self.pool = GeM()
        self.hidden = nn.Sequential(nn.Linear(in_channels, in_channels // 2), nn.ReLU())
        self.predict = nn.Sequential(
            nn.Linear(in_channels // 2, in_channels // 8),
            nn.ReLU(),
            nn.Linear(in_channels // 8, out_dim),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden(self.pool(features))
        return hidden, self.predict(hidden)


class SpatialLocBranch(nn.Module):
    """Localisation by soft-argmax: where the streak is, then how large it is.

    A 1x1 convolution scores every cell of the feature map; the softmax of the scores weights
    the cell centres into (cx, cy) and the features into an object descriptor, from which an
    MLP predicts (w, h). A globally pooled branch has to encode position in its channels and,
    trained from scratch, localised poorly (mean IoU 0.18 after 1,000 steps of 128 images,
    measured); here position comes from the map's own coordinates. The C/2 hidden layer of the
    pooled features feeds the embedding, as in the published branch.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(in_channels, 1, 1)
        self.hidden = nn.Sequential(nn.Linear(in_channels, in_channels // 2), nn.ReLU())
        self.predict = nn.Sequential(
            nn.Linear(in_channels // 2, in_channels // 8),
            nn.ReLU(),
            nn.Linear(in_channels // 8, 2),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = features.shape
        weights = self.score(features).float().flatten(1).softmax(dim=1)  # [B, h*w]
        ys = (torch.arange(height, device=features.device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=features.device, dtype=torch.float32) + 0.5) / width
        cx = weights @ xs.repeat(height)
        cy = weights @ ys.repeat_interleave(width)
        pooled = torch.einsum("bn,bcn->bc", weights.to(features.dtype), features.flatten(2))
        hidden = self.hidden(pooled)
        size = self.predict(hidden).float()
        return hidden, torch.stack([cx, cy, size[:, 0], size[:, 1]], dim=1)


class BlurAwareNet(nn.Module):
    """Backbone + descriptor / blur / localisation branches -> unit embedding.

    Callers pass RGB images in [0, 1], shape [B, 3, H, W]; ImageNet normalisation happens inside
    so every caller (trainer, embedder, benchmark) feeds pixels the same way. With a head
    disabled its hidden layer is left out of the embedding and its prediction is None, which
    gives the `standard` baseline from the same class.

    head="global" is the published layout: every branch pools the backbone's map of the whole
    image. head="crop" finds, then describes: a second instance of the backbone (the locator)
    sees the image at half resolution and feeds the blur branch and a soft-argmax localisation
    branch (`SpatialLocBranch`); the descriptor branch pools the backbone's map of a square crop
    around the streak box (the predicted box, or boxes the trainer passes), resampled to
    `crop_size` pixels.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        embedding_dim: int = 128,
        blur_head: bool = True,
        loc_head: bool = True,
        pretrained: bool = False,
        backbone_weights: str | Path | None = None,
        head: str = "global",
        crop_size: int = DEFAULT_CROP_SIZE,
        blur_input: str = "image",
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if pretrained and backbone_weights is not None:
            raise ValueError("give either pretrained=True or backbone_weights, not both")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose from {list(HEADS)}")
        if head == "crop" and not loc_head:
            raise ValueError("the crop head needs the localisation head (it crops the predicted "
                             "streak box); use head='global' without one")
        if blur_input not in BLUR_INPUTS:
            raise ValueError(f"unknown blur_input {blur_input!r}; choose from {list(BLUR_INPUTS)}")
        if blur_input == "crop" and head != "crop":
            raise ValueError("blur_input='crop' needs the crop head (the global head has no crop)")
        if not 16 <= crop_size <= 512:
            raise ValueError(f"crop_size must be between 16 and 512 pixels, got {crop_size}")
        self.backbone_name = backbone
        self.embedding_dim = embedding_dim
        self.head = head
        self.crop_size = crop_size
        self.blur_input = blur_input
        self.backbone = _make_backbone(backbone, pretrained, backbone_weights)
        self.locator = (_make_backbone(backbone, pretrained, backbone_weights)
                        if head == "crop" else None)
        channels = int(self.backbone.num_features)
        if channels < 8:
            raise ValueError(f"backbone {backbone!r} has {channels} channels; at least 8 needed")

        self.register_buffer(
            "pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False
        )
        self.descriptor = nn.Sequential(GeM(), nn.Linear(channels, channels), nn.ReLU())
        self.blur_branch = AuxiliaryBranch(channels, 1) if blur_head else None
        loc_branch = SpatialLocBranch(channels) if head == "crop" else AuxiliaryBranch(channels, 4)
        self.loc_branch = loc_branch if loc_head else None
        concat_dim = channels + (channels // 2) * (int(blur_head) + int(loc_head))
        self.project = nn.Linear(concat_dim, embedding_dim)
        # Centres and scales the projection before L2 normalisation, without a learnable
        # shift. Without it the non-negative pooled features give every image nearly the same
        # direction (mean cosine 0.83 at initialisation) and, trained from scratch, embeddings
        # collapsed further (0.97-0.98) and never separated; with a learnable shift they collapsed
        # again (0.78, just inside the contrastive margin). The paper's ImageNet-initialised
        # ResNet did not start collapsed.
        self.embedding_norm = nn.BatchNorm1d(embedding_dim, affine=False)

    @property
    def has_blur_head(self) -> bool:
        return self.blur_branch is not None

    @property
    def has_loc_head(self) -> bool:
        return self.loc_branch is not None

    def architecture(self) -> dict:
        """The constructor arguments that fix the state-dict layout (stored in checkpoints)."""
        return {
            "backbone": self.backbone_name,
            "embedding_dim": self.embedding_dim,
            "blur_head": self.has_blur_head,
            "loc_head": self.has_loc_head,
            "head": self.head,
            "crop_size": self.crop_size,
            # Only when not the default, so the checkpoints made before the option keep their
            # fingerprints (`retrieval.model.checkpoint.model_fingerprint`).
            **({"blur_input": self.blur_input} if self.blur_input != "image" else {}),
        }

    def _features(self, backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
        features = backbone.forward_features((images - self.pixel_mean) / self.pixel_std)
        if features.ndim != 4:
            raise ValueError(
                f"backbone {self.backbone_name!r} returned features of shape "
                f"{tuple(features.shape)}; a CNN feature map [B, C, h, w] is required"
            )
        return features

    def _aux_features(self, images: torch.Tensor) -> torch.Tensor:
        """The map the blur and localisation branches read: the locator's, at half resolution,
        for the crop head; the backbone's, which the descriptor also pools, for the global head."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
        if self.locator is None:
            return self._features(self.backbone, images)
        small = F.interpolate(images, scale_factor=LOCATOR_SCALE, mode="bilinear",
                              antialias=True, align_corners=False)
        return self._features(self.locator, small)

    def locate(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 4] the predicted streak boxes alone, as `forward(images).box`, without describing
        the crops: re-ranking needs only where the object is (for the crop head that skips the
        descriptor backbone's pass over the crops)."""
        if self.loc_branch is None:
            raise ValueError("this model has no localisation head")
        return self.loc_branch(self._aux_features(images))[1].float()

    def forward(self, images: torch.Tensor, crop_boxes: torch.Tensor | None = None,
                detach_blur: bool = False, isolate_blur: bool = False) -> NetOutput:
        """`crop_boxes` ([B, 4] normalised cx, cy, w, h) replace the predicted boxes as the
        crop head's windows, except in NaN rows (training crops jittered true boxes and some
        predicted ones); the global head ignores them. `detach_blur` (training only: the vectors
        are the same) feeds the blur branch's hidden layer to the embedding without letting the
        retrieval losses shape it, so that branch learns from L_be alone. `isolate_blur` (training
        only too) gives the blur branch a detached copy of the map it reads, so no gradient through
        that branch (L_be's above all) reaches the backbone it shares (the locator, or with
        blur_input "crop" the descriptor's)."""
        aux_features = self._aux_features(images)
        features = aux_features if self.locator is None else None
        loc_hidden, box = None, None
        if self.loc_branch is not None:
            loc_hidden, box = self.loc_branch(aux_features)
            box = box.float()
        if self.locator is not None:
            windows = box.detach()
            if crop_boxes is not None:
                given = crop_boxes.to(windows.dtype)
                windows = torch.where(torch.isnan(given), windows, given)
            squares = square_crop_boxes(windows, tuple(images.shape[-2:]))
            features = self._features(self.backbone, crop_squares(images, squares, self.crop_size))
        hidden_parts, blur_value = [], None
        if self.blur_branch is not None:
            blur_map = features if self.blur_input == "crop" else aux_features
            hidden, prediction = self.blur_branch(blur_map.detach() if isolate_blur else blur_map)
            hidden_parts.append(hidden.detach() if detach_blur else hidden)
            blur_value = prediction.squeeze(1).float()
        if loc_hidden is not None:
            hidden_parts.append(loc_hidden)
        parts = [self.descriptor(features), *hidden_parts]
        projected = self.embedding_norm(self.project(torch.cat(parts, dim=1)))
        embedding = F.normalize(projected.float(), dim=1)
        return NetOutput(embedding=embedding, blur_value=blur_value, box=box)


def _make_backbone(name: str, pretrained: bool, weights: str | Path | None) -> nn.Module:
    backbone = timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="")
    if weights is not None:
        load_backbone_weights(backbone, weights)
    return backbone


class MarginSoftmaxHead(nn.Module):
    """Additive cosine-margin softmax (CosFace) over the training instances.

    logits = scale * (cos(embedding, w_c) - margin * [c == label]); feed them to
    `margin_softmax_loss`. Rows of the weight are L2-normalised at every use, so only their
    direction matters; they start as Gaussian vectors of about unit length (std 1/sqrt(D)),
    i.e. random directions spread uniformly on the sphere, with a scale on which Adam's steps
    move them at a sensible rate. Kept outside BlurAwareNet so inference checkpoints do not
    carry one row per training instance.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.15
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(
                f"embedding_dim and num_classes must be >= 1, got {embedding_dim}, {num_classes}"
            )
        self.num_classes = num_classes
        self.scale = scale
        self.margin = margin
        initial = torch.randn(num_classes, embedding_dim) / math.sqrt(embedding_dim)
        self.weight = nn.Parameter(initial)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, num_classes] cosine between each embedding and each class direction."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits; with `labels` the target logit of each row is lowered by scale*margin."""
        cosine = self.cosine(embeddings)
        if labels is None:
            return self.scale * cosine
        if labels.shape != (embeddings.shape[0],):
            raise ValueError(f"labels must have shape [{embeddings.shape[0]}], got {labels.shape}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {labels.tolist()}")
        target = F.one_hot(labels.long(), self.num_classes).to(cosine.dtype)
        return self.scale * (cosine - self.margin * target)

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, scale={self.scale}, margin={self.margin}"


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local state dict into a timm backbone, never unpickling arbitrary objects.

    Keys the backbone lacks (a classifier saved with a full model) are ignored; keys the
    backbone needs but the file lacks, or tensors of the wrong shape, are an error.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"{path}: backbone weights file not found")
    try:
        if path.suffix == ".safetensors":
            state = load_safetensors(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # each reader raises its own types for corrupt files
        raise BackboneWeightsError(f"{path}: cannot read backbone weights: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneWeightsError(f"{path}: not a state dict of tensors")
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise BackboneWeightsError(f"{path}: weights do not fit the backbone: {exc}") from exc
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise BackboneWeightsError(
            f"{path}: {len(result.missing_keys)} backbone tensors missing from the file "
            f"(e.g. {shown})"
        )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters, e.g. to report model size next to speed."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
