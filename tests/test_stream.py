"""The composite training stream, its layer bank, and the crop head's geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import synthesized

from retrieval.manifest import manifest_items
from retrieval.model import BlurAwareNet
from retrieval.model.crop import CROP_MARGIN, crop_squares, square_crop_boxes
from retrieval.sim.layout import Preset
from retrieval.sim.objects import global_instance_id
from retrieval.train.data import PKSampler
from retrieval.train.layers import LayerBank
from retrieval.train.stream import (
    CompositeStream,
    open_composite_stream,
    training_crop_boxes,
)

PRESET = Preset(categories=2, instances=10, trajectories=3, height=48, width=64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return synthesized(tmp_path_factory.mktemp("stream_data"), PRESET)


@pytest.fixture(scope="module")
def opened(data_dir):
    return open_composite_stream(data_dir / "manifest.parquet", (48, 64), False, 0, progress=False)


def test_bank_holds_every_train_image_with_the_labels_synth_gave_it(data_dir, opened):
    data, stream, _ = opened
    bank = stream.bank
    items, table = manifest_items(data_dir)
    roles = table.column("role").to_pylist()
    train = [i for i, role in enumerate(roles) if role == "train"]
    assert len(bank) == len(train) == 14 * 3 * 11
    severity = table.column("blur_severity").to_pylist()
    box_columns = [table.column(c).to_pylist() for c in ("bbox_cx", "bbox_cy", "bbox_w", "bbox_h")]
    where = {(int(b), int(t), int(e)): r for r, (b, t, e) in
             enumerate(zip(bank.instance, bank.trajectory, bank.exposure))}
    for i in train[::37]:
        item = items[i]
        row = where[(global_instance_id(item.category, item.instance), item.trajectory,
                     item.exposure)]
        assert bank.blur_value[row] == pytest.approx(1 - severity[i], abs=1e-6)
        assert bank.box[row].tolist() == pytest.approx([c[i] for c in box_columns], abs=1e-6)
        # The stored layer is the image's object: its coverage spans exactly the streak box.
        alpha = bank.layer(row)[3].numpy()
        ys, xs = np.nonzero(alpha)
        assert (xs.min() + xs.max() + 1) / 2 / 64 == pytest.approx(bank.box[row][0], abs=1e-6)
    assert data.num_classes == 14 and len(data.items) == len(bank)


def test_images_of_one_instance_never_share_a_background(opened):
    # synth's files give every exposure of a trajectory one background, and an instance only a
    # few trajectories: a shortcut. The stream draws each batch's backgrounds without
    # replacement, independently of the instance.
    data, stream, _ = opened
    sampler = PKSampler(data.classes, data.trajectories, 4, 4, seed=0)
    seen: dict[int, list[int]] = {}
    for position, rows in enumerate(sampler.epoch_batches(0, 30)):
        batch = stream.batch(rows, 0, position)
        backgrounds = batch["background"].tolist()
        assert len(set(backgrounds)) == len(backgrounds)
        for cls, background in zip(data.classes[rows], backgrounds):
            seen.setdefault(int(cls), []).append(background)
    for backgrounds in seen.values():
        assert len(set(backgrounds)) >= 0.9 * len(backgrounds)


def test_batches_are_a_pure_function_of_seed_epoch_and_position(opened):
    data, stream, _ = opened
    rows = np.arange(8) * 40
    first, again = stream.batch(rows, 2, 5), stream.batch(rows, 2, 5)
    assert torch.equal(first["pixels"], again["pixels"]) and first["pixels"].dtype == torch.uint8
    assert first["pixels"].shape == (8, 48, 64, 3)
    assert not torch.equal(first["pixels"], stream.batch(rows, 2, 6)["pixels"])
    assert first["ok"].tolist() == rows.tolist()


def one_square_bank(size=(48, 64), top=10, left=6, side=12) -> LayerBank:
    """A bank with one white, fully covered square: its box is known exactly."""
    window = np.full((side * side, 4), 255, dtype=np.uint8)
    box = [(left + side / 2) / size[1], (top + side / 2) / size[0], side / size[1], side / size[0]]
    return LayerBank(pixels=window, offsets=np.array([0, side * side]),
                     windows=np.array([[top, left, side, side]]), instance=np.array([7]),
                     trajectory=np.array([0]), exposure=np.array([0]),
                     blur_value=np.array([1.0], np.float32), box=np.array([box], np.float32),
                     image_size=size)


def test_flipped_objects_keep_boxes_that_frame_them():
    bank = one_square_bank()
    black = np.zeros((8, 48, 64, 3), dtype=np.uint8)
    stream = CompositeStream(bank, black, (48, 64), np.zeros(1, dtype=np.int64), seed=3)
    flipped = 0
    for position in range(8):
        batch = stream.batch(np.zeros(4, dtype=np.int64), 0, position)
        for pixels, box in zip(batch["pixels"].numpy(), batch["box"].numpy()):
            ys, xs = np.nonzero(pixels.mean(axis=2) > 128)
            found = [(xs.min() + xs.max() + 1) / 2 / 64, (ys.min() + ys.max() + 1) / 2 / 48]
            assert found == pytest.approx(box[:2].tolist(), abs=1e-6)
            flipped += box[0] > 0.5
    assert 0 < flipped < 32  # both orientations occur


def test_square_crops_keep_proportions_and_centre_the_box():
    boxes = torch.tensor([[0.5, 0.5, 0.25, 0.1], [0.2, 0.3, 0.01, 0.01]])
    squares = square_crop_boxes(boxes, (96, 128))
    assert squares[0].tolist() == pytest.approx([0.5, 0.5, 32 * CROP_MARGIN])  # longer side
    assert squares[1, 2].item() == 8.0  # never narrower than a few pixels

    image = torch.zeros(1, 1, 96, 128)
    image[..., 40:56, 20:36] = 1.0  # a 16-pixel square centred at (28, 48)
    squares = torch.tensor([[28 / 128, 48 / 96, 32.0]])
    crop = crop_squares(image, squares, 32)[0, 0]
    assert crop[8:24, 8:24].min().item() == pytest.approx(1.0)  # the middle half: the square
    assert crop[:7].max().item() == 0.0 and crop[:, 25:].max().item() == 0.0


def test_training_windows_jitter_true_boxes_and_leave_predicted_rows_as_nan():
    true = torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(400, 1)
    windows = training_crop_boxes(true, 0.25, torch.Generator().manual_seed(0))
    predicted = torch.isnan(windows).all(dim=1)
    assert 0.15 < predicted.float().mean().item() < 0.35
    given = windows[~predicted]
    assert (given[:, 2:] >= 0.2 * 0.85 - 1e-6).all() and (given[:, 2:] <= 0.2 * 1.3 + 1e-6).all()
    assert ((given[:, :2] - 0.5).abs() <= 0.2 * 0.1 + 1e-6).all()
    assert given.std(dim=0).min() > 0


def test_crop_head_uses_given_windows_and_its_own_box_in_nan_rows():
    torch.manual_seed(0)
    net = BlurAwareNet("plainnet_s", embedding_dim=16, head="crop", crop_size=16).eval()
    images = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        own = net(images)
        nan_rows = net(images, crop_boxes=torch.full((2, 4), float("nan")))
        elsewhere = net(images, crop_boxes=torch.tensor([[0.1, 0.1, 0.1, 0.1]] * 2))
    assert torch.allclose(own.embedding, nan_rows.embedding)
    assert not torch.allclose(own.embedding, elsewhere.embedding)
    assert own.box.shape == (2, 4) and ((own.box > 0) & (own.box < 1)).all()
    with pytest.raises(ValueError, match="needs the localisation head"):
        BlurAwareNet("plainnet_s", loc_head=False, head="crop")
