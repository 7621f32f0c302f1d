"""BlurAwareNet, GeM pooling and the margin-softmax head on a tiny timm backbone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from retrieval.model import (
    BackboneWeightsError,
    BlurAwareNet,
    GeM,
    MarginSoftmaxHead,
    count_parameters,
)
from retrieval.model.checkpoint import load_checkpoint, save_checkpoint
from retrieval.model.network import BLUR_INPUTS, IMAGENET_MEAN, NetOutput

TINY = "test_byobnet"  # timm's own test model: 256 channels, a few hundred k parameters


def tiny_net(**kwargs) -> BlurAwareNet:
    torch.manual_seed(0)
    return BlurAwareNet(TINY, embedding_dim=16, **kwargs).eval()


def images(batch: int = 4, height: int = 48, width: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_blur_aware_output_shapes_norms_and_ranges():
    net = tiny_net()
    with torch.no_grad():
        out = net(images())
    assert out.embedding.shape == (4, 16) and out.embedding.dtype == torch.float32
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(4))
    assert out.blur_value.shape == (4,)
    assert out.box.shape == (4, 4)
    for prediction in (out.blur_value, out.box):
        assert bool(((prediction > 0) & (prediction < 1)).all())


def test_embedding_input_concatenates_only_present_hidden_layers():
    channels = 256
    assert tiny_net().project.in_features == channels + channels // 2 + channels // 2
    assert tiny_net(loc_head=False).project.in_features == channels + channels // 2
    assert tiny_net(blur_head=False, loc_head=False).project.in_features == channels


def gradient_reached(parameters) -> bool:
    return any(p.grad is not None and bool(p.grad.any()) for p in parameters)


def training_pass(head: str, **flags) -> tuple[BlurAwareNet, torch.Tensor, NetOutput]:
    """A training-mode pass with a gradient flag set; the flag must not change any output."""
    net = tiny_net(head=head).train()
    batch = images()
    plain, flagged = net(batch), net(batch, **flags)
    torch.testing.assert_close(flagged.embedding, plain.embedding)
    torch.testing.assert_close(flagged.blur_value, plain.blur_value)
    return net, batch, flagged


@pytest.mark.parametrize("head", ["global", "crop"])
def test_detached_blur_features_give_the_same_vectors_but_no_retrieval_gradient(head):
    net, batch, detached = training_pass(head, detach_blur=True)
    detached.embedding.sum().backward()
    assert not gradient_reached(net.blur_branch.hidden.parameters())
    assert gradient_reached([net.project.weight])
    net.zero_grad()
    net(batch).embedding.sum().backward()
    assert gradient_reached(net.blur_branch.hidden.parameters())  # undetached, it shapes them


@pytest.mark.parametrize("head", ["global", "crop"])
def test_isolated_blur_branch_sends_no_gradient_into_the_shared_map(head):
    net, batch, isolated = training_pass(head, isolate_blur=True)
    shared = net.locator if head == "crop" else net.backbone
    isolated.blur_value.sum().backward()  # L_be's path alone
    assert not gradient_reached(shared.parameters())
    assert gradient_reached(net.blur_branch.hidden.parameters())  # the branch itself still learns
    net.zero_grad()
    net(batch).blur_value.sum().backward()
    assert gradient_reached(shared.parameters())


def test_a_blur_branch_on_the_crop_learns_from_the_descriptor_map_not_the_locator(tmp_path):
    net = tiny_net(head="crop", blur_input="crop").train()
    assert net.architecture()["blur_input"] == "crop"
    assert "blur_input" not in tiny_net(head="crop").architecture()  # old fingerprints hold
    out = net(images())
    assert out.blur_value.shape == (4,) and out.embedding.shape == (4, 16)
    out.blur_value.sum().backward()  # L_be's path
    assert gradient_reached(net.backbone.parameters())
    assert not gradient_reached(net.locator.parameters())
    net.eval()
    save_checkpoint(tmp_path / "net", net, {"image_size": [48, 64]})
    loaded, config = load_checkpoint(tmp_path / "net")
    assert loaded.blur_input == "crop" and config["blur_input"] == "crop"
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()).embedding, net(images()).embedding)


def test_bad_blur_inputs_are_refused():
    with pytest.raises(ValueError, match="needs the crop head"):
        tiny_net(head="global", blur_input="crop")
    with pytest.raises(ValueError, match="unknown blur_input"):
        tiny_net(head="crop", blur_input="streak")


def test_the_train_command_offers_every_blur_input():
    from benchmark.commands.train import train_command

    choice = next(p for p in train_command.params if p.name == "blur_input").type
    assert tuple(choice.choices) == BLUR_INPUTS


def test_standard_network_has_no_blur_or_box_predictions():
    net = tiny_net(blur_head=False, loc_head=False)
    with torch.no_grad():
        out = net(images())
    assert out.blur_value is None and out.box is None
    assert out.embedding.shape == (4, 16)
    assert net.architecture() == {
        "backbone": TINY,
        "embedding_dim": 16,
        "blur_head": False,
        "loc_head": False,
        "head": "global",
        "crop_size": 48,
    }


@pytest.mark.parametrize("head", ["global", "crop"])
def test_locate_gives_the_forward_pass_boxes_without_describing(head, monkeypatch):
    net = tiny_net(head=head)
    batch = images()
    with torch.no_grad():
        expected = net(batch).box
        crops = []
        monkeypatch.setattr(net.descriptor, "forward", lambda features: crops.append(1))
        boxes = net.locate(batch)
    torch.testing.assert_close(boxes, expected)
    assert not crops, "the descriptor branch does not run"
    with pytest.raises(ValueError, match="no localisation head"):
        tiny_net(loc_head=False).locate(batch)


def test_one_head_only():
    with torch.no_grad():
        out = tiny_net(loc_head=False)(images())
    assert out.blur_value.shape == (4,) and out.box is None


def test_channels_last_gives_the_same_output():
    net = tiny_net()
    x = images()
    with torch.no_grad():
        reference = net(x)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out.embedding, reference.embedding, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.blur_value, reference.blur_value, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.box, reference.box, atol=1e-5, rtol=1e-4)


def test_network_applies_imagenet_normalisation(monkeypatch):
    net = tiny_net()
    seen = {}
    original = net.backbone.forward_features

    def spy(x):
        seen["input"] = x
        return original(x)

    monkeypatch.setattr(net.backbone, "forward_features", spy)
    mean_image = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 32, 32)
    with torch.no_grad():
        net(mean_image)
    torch.testing.assert_close(seen["input"], torch.zeros(2, 3, 32, 32))
    assert "pixel_mean" not in net.state_dict()


def test_rejects_non_rgb_and_non_float_input():
    with pytest.raises(ValueError, match="RGB"):
        tiny_net()(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="float images"):
        tiny_net()(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_default_backbone_runs_at_the_default_resolution():
    net = BlurAwareNet().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 96, 128))
    assert out.embedding.shape == (2, 128)
    assert net.backbone_name == "plainnet_s"


def test_backbone_weights_load_from_safetensors_and_torch_files(tmp_path):
    source = tiny_net()
    state = {k: v.contiguous() for k, v in source.backbone.state_dict().items()}
    save_file(state, str(tmp_path / "backbone.safetensors"))
    torch.save(state, tmp_path / "backbone.pt")
    for name in ("backbone.safetensors", "backbone.pt"):
        torch.manual_seed(123)  # different random init, so equality proves the load
        loaded = BlurAwareNet(TINY, embedding_dim=16, backbone_weights=tmp_path / name)
        for key, value in loaded.backbone.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


def test_backbone_weights_errors_name_the_file(tmp_path):
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(BackboneWeightsError, match="absent.safetensors"):
        BlurAwareNet(TINY, backbone_weights=missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BackboneWeightsError, match="garbage.pt"):
        BlurAwareNet(TINY, backbone_weights=garbage)
    partial = tmp_path / "partial.safetensors"
    save_file({"unrelated.weight": torch.zeros(2)}, str(partial))
    with pytest.raises(BackboneWeightsError, match="partial.safetensors.*missing"):
        BlurAwareNet(TINY, backbone_weights=partial)


def test_pretrained_and_local_weights_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        BlurAwareNet(TINY, pretrained=True, backbone_weights=tmp_path / "w.pt")


def test_gem_with_p_one_is_average_pooling():
    x = torch.rand(2, 5, 3, 4) + 0.1
    gem = GeM(p=1.0)
    torch.testing.assert_close(gem(x), F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_gem_with_large_p_approaches_max_pooling():
    x = torch.rand(2, 5, 4, 4) + 0.1
    pooled = GeM(p=200.0)(x)
    maximum = x.amax(dim=(-2, -1))
    assert bool((pooled <= maximum + 1e-6).all())
    # (1/16)^(1/200) bounds how far below the max the mean of powers can be.
    assert bool((pooled >= maximum * (1 / 16) ** (1 / 200) - 1e-6).all())
    assert bool((pooled > x.mean(dim=(-2, -1))).all())


def test_gem_clamps_features_and_keeps_p_at_least_one():
    gem = GeM(p=3.0, eps=1e-6)
    torch.testing.assert_close(gem(-torch.ones(1, 2, 2, 2)), torch.full((1, 2), 1e-6))
    x = torch.rand(1, 3, 2, 2) + 0.1
    with torch.no_grad():
        gem.p.fill_(0.2)
    torch.testing.assert_close(gem(x), x.mean(dim=(-2, -1)))
    with pytest.raises(ValueError, match="p must be >= 1"):
        GeM(p=0.5)


def test_gem_p_is_learnable():
    gem = GeM()
    gem(torch.rand(1, 2, 3, 3) + 0.1).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs().item() > 0


def hand_cosine(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings, dim=1) @ F.normalize(weight, dim=1).T


def test_margin_head_without_margin_is_scaled_cosine_cross_entropy():
    torch.manual_seed(0)
    head = MarginSoftmaxHead(8, 5, scale=30.0, margin=0.0)
    embeddings = F.normalize(torch.randn(4, 8), dim=1)
    labels = torch.tensor([0, 3, 4, 3])
    logits = head(embeddings, labels)
    reference = 30.0 * hand_cosine(embeddings, head.weight.detach())
    torch.testing.assert_close(logits, reference)
    torch.testing.assert_close(F.cross_entropy(logits, labels), F.cross_entropy(reference, labels))


def test_margin_lowers_only_the_target_logit_by_scale_times_margin():
    torch.manual_seed(0)
    head = MarginSoftmaxHead(8, 5, scale=30.0, margin=0.15)
    embeddings = F.normalize(torch.randn(4, 8), dim=1)
    labels = torch.tensor([1, 1, 0, 4])
    difference = head(embeddings, labels) - head(embeddings)
    expected = torch.zeros(4, 5)
    expected[torch.arange(4), labels] = -30.0 * 0.15
    torch.testing.assert_close(difference, expected)


def test_margin_head_ignores_weight_row_length_and_rejects_bad_labels():
    torch.manual_seed(0)
    head = MarginSoftmaxHead(8, 3)
    embeddings = F.normalize(torch.randn(2, 8), dim=1)
    before = head(embeddings)
    with torch.no_grad():
        head.weight.mul_(torch.tensor([[2.0], [0.5], [7.0]]))
    torch.testing.assert_close(head(embeddings), before)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        head(embeddings, torch.tensor([0, 3]))


def test_count_parameters():
    layer = torch.nn.Linear(3, 2)
    assert count_parameters(layer) == 8
    layer.bias.requires_grad_(False)
    assert count_parameters(layer, trainable_only=True) == 6
    assert count_parameters(layer) == 8


def test_fresh_embeddings_are_spread_over_the_sphere_not_collapsed():
    # Pooled non-negative features point every image the same way; the batch norm before the
    # L2 normalisation centres them, otherwise training from scratch started (and stayed)
    # collapsed. Same images through the bare projection show the collapse being prevented.
    torch.manual_seed(0)
    net = BlurAwareNet(TINY, embedding_dim=16).train()
    batch = torch.rand(24, 3, 48, 64)
    with torch.no_grad():
        cosine = net(batch).embedding @ net(batch).embedding.T
        net.embedding_norm = torch.nn.Identity()
        collapsed = net(batch).embedding @ net(batch).embedding.T
    off_diagonal = ~torch.eye(24, dtype=torch.bool)
    assert abs(cosine[off_diagonal].mean()) < 0.1  # centred: about orthogonal on average
    assert collapsed[off_diagonal].mean() > 0.3
