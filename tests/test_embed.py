"""The embedding API: vectors, mixed inputs, bad files, batching and worker processes."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.embed import Embedder, decode_threads, load_embedder, prepare_pixels
from retrieval.manifest import manifest_items
from retrieval.model import BlurAwareNet, model_fingerprint, save_checkpoint
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset
from retrieval.synth import synthesize

TINY = "test_byobnet"
SIZE = (32, 48)
PRESET = Preset(categories=1, instances=5, trajectories=2, height=48, width=64)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same tiny data set twice: as PNG files and as virtual (rendered on demand) rows."""
    root = tmp_path_factory.mktemp("embed_data")
    config = SimConfig(height=48, width=64)
    synthesize(root / "files", PRESET, config, progress=False)
    synthesize(root / "virtual", PRESET, config, virtual=True, progress=False)
    file_rows, _ = manifest_items(root / "files")
    virtual_rows, _ = manifest_items(root / "virtual")
    return file_rows, virtual_rows


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return BlurAwareNet(TINY, embedding_dim=16).eval()


def embedder(net, **kwargs) -> Embedder:
    return Embedder.from_model(net, {"image_size": list(SIZE)}, **kwargs)


def paths(rows, count):
    return [str(row.path) for row in rows[:count]]


def test_vectors_are_unit_float32_rows_in_item_order(datasets, net):
    files, _ = datasets
    result = embedder(net, batch_size=4, workers=0).embed(paths(files, 10))
    assert result.vectors.shape == (10, 16) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert result.ok.dtype == np.int64 and result.ok.tolist() == list(range(10))
    assert result.errors == []
    assert len(np.unique(result.vectors.round(5), axis=0)) == 10  # different images differ


def test_every_kind_of_item_of_one_image_gives_the_same_pixels_and_vector(datasets, net):
    files, virtual = datasets
    file_row, virtual_row = files[7], virtual[7]
    assert (file_row.instance, file_row.trajectory, file_row.exposure) == (
        virtual_row.instance, virtual_row.trajectory, virtual_row.exposure)
    assert virtual_row.path is None
    original = np.array(Image.open(file_row.path).convert("RGB"))
    items = [
        str(file_row.path),
        Path(file_row.path),
        Image.open(file_row.path),
        original,
        original.astype(np.float64) / 255.0,
        file_row,
        virtual_row,
    ]
    pixels, errors = prepare_pixels(items, SIZE)
    assert errors == []
    assert pixels[0].shape == (*SIZE, 3) and pixels[0].dtype == np.uint8
    for other in pixels[1:]:
        np.testing.assert_array_equal(other, pixels[0])

    result = embedder(net, batch_size=8, workers=0).embed(items)
    assert result.ok.tolist() == list(range(len(items)))
    for vector in result.vectors[1:]:
        np.testing.assert_allclose(vector, result.vectors[0], atol=1e-6)


def test_head_predictions_come_with_the_vectors_and_are_none_without_heads(datasets, net):
    items = paths(datasets[0], 5)
    result = embedder(net, batch_size=2, workers=0).embed(items)
    assert result.blur_values.shape == (5,) and result.boxes.shape == (5, 4)
    assert ((result.blur_values > 0) & (result.blur_values < 1)).all()
    with torch.inference_mode():
        direct = net(torch.from_numpy(np.stack(prepare_pixels(items, SIZE)[0])).permute(0, 3, 1, 2)
                     .float().div(255))
    np.testing.assert_allclose(result.boxes, direct.box.numpy(), atol=1e-5)
    torch.manual_seed(0)
    bare = BlurAwareNet(TINY, embedding_dim=16, blur_head=False, loc_head=False).eval()
    plain = embedder(bare, workers=0).embed(items)
    assert plain.blur_values is None and plain.boxes is None and len(plain.vectors) == 5


def test_bad_files_are_reported_and_the_rest_of_the_batch_is_embedded(datasets, net, tmp_path):
    files, _ = datasets
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    missing = tmp_path / "missing.png"
    good = paths(files, 3)
    items = [good[0], str(empty), good[1], str(text), str(missing), good[2]]

    result = embedder(net, batch_size=len(items), workers=0).embed(items)
    assert result.ok.tolist() == [0, 2, 5]
    assert [index for index, _ in result.errors] == [1, 3, 4]
    messages = dict(result.errors)
    assert str(empty) in messages[1] and "empty file" in messages[1]
    assert str(text) in messages[3] and "not an image" in messages[3]
    assert str(missing) in messages[4] and "not found" in messages[4]
    alone = embedder(net, batch_size=len(items), workers=0).embed(good)
    np.testing.assert_allclose(result.vectors, alone.vectors, atol=1e-6)


def test_unusable_objects_and_unrenderable_rows_are_reported_per_item(datasets, net):
    files, virtual = datasets
    no_settings = dataclasses.replace(virtual[0], sim=None)
    items = [42, np.zeros((5, 5, 2), dtype=np.uint8), no_settings, virtual[1], paths(files, 1)[0]]
    result = embedder(net, batch_size=2, workers=0).embed(items)
    assert result.ok.tolist() == [3, 4]
    messages = dict(result.errors)
    assert sorted(messages) == [0, 1, 2]
    assert "type int" in messages[0]
    assert "in-memory ndarray" in messages[1] and "shape" in messages[1]
    assert f"virtual row image_id={no_settings.image_id}" in messages[2]


def test_nothing_embeddable_gives_an_empty_result(net):
    result = embedder(net, workers=0).embed(["/no/such/file.png"])
    assert result.vectors.shape == (0, 16) and result.vectors.dtype == np.float32
    assert result.ok.shape == (0,) and len(result.errors) == 1


def test_batch_size_does_not_change_vectors(datasets, net):
    items = paths(datasets[0], 7)
    reference = embedder(net, batch_size=7, workers=0).embed(items).vectors
    for batch_size in (1, 3):
        vectors = embedder(net, batch_size=batch_size, workers=0).embed(items).vectors
        np.testing.assert_allclose(vectors, reference, atol=1e-5)


def test_a_worker_process_gives_the_same_vectors_as_the_main_process(datasets, net):
    files, virtual = datasets
    items = paths(files, 5) + virtual[5:10] + ["/no/such/file.png"]
    in_main = embedder(net, batch_size=4, workers=0).embed(items)
    in_worker = embedder(net, batch_size=4, workers=1).embed(items)
    np.testing.assert_array_equal(in_worker.ok, in_main.ok)
    np.testing.assert_array_equal(in_worker.vectors, in_main.vectors)
    assert in_worker.errors == in_main.errors == [(10, "/no/such/file.png: file not found")]


def test_decoding_a_batch_in_threads_keeps_the_order_and_content_of_the_vectors(
        datasets, net, monkeypatch):
    files, virtual = datasets
    items = (paths(files, 7) + ["/no/such/file.png"] + virtual[7:10]
             + [np.zeros((5, 5, 2), dtype=np.uint8)] + paths(files[10:], 4))
    monkeypatch.setattr("retrieval.embed.decode_threads", lambda workers: 1)
    serial = embedder(net, batch_size=6, workers=0).embed(items)
    pools = []

    class CountedPool(ThreadPoolExecutor):
        def __init__(self, threads):
            pools.append(threads)
            super().__init__(threads)

    monkeypatch.setattr("retrieval.embed.decode_threads", lambda workers: 3)
    monkeypatch.setattr("retrieval.embed.ThreadPoolExecutor", CountedPool)
    threaded = embedder(net, batch_size=6, workers=0).embed(items)
    assert pools == [3, 3, 3]  # every batch of 6 has files or arrays to decode
    np.testing.assert_array_equal(threaded.ok, serial.ok)
    np.testing.assert_array_equal(threaded.vectors, serial.vectors)
    assert threaded.errors == serial.errors and [i for i, _ in serial.errors] == [7, 11]
    assert len(serial.ok) == len(items) - 2


def test_decode_threads_follow_torch_without_loader_processes_and_are_one_inside_them():
    assert decode_threads(0) == torch.get_num_threads()
    assert decode_threads(2) == 1


def test_embedding_leaves_the_model_in_its_mode_and_the_fingerprint_follows_weights(datasets):
    torch.manual_seed(0)
    model = BlurAwareNet(TINY, embedding_dim=16).train()
    first = embedder(model, workers=0)
    first.embed(paths(datasets[0], 2))
    assert model.training
    assert embedder(model, workers=0).fingerprint == first.fingerprint
    with torch.no_grad():
        model.project.bias.add_(0.01)
    assert embedder(model, workers=0).fingerprint != first.fingerprint


def test_load_embedder_reads_a_checkpoint_and_matches_the_in_memory_model(datasets, net, tmp_path):
    config = save_checkpoint(tmp_path / "ckpt", net, {"image_size": list(SIZE)})
    loaded = load_embedder(str(tmp_path / "ckpt"), device="cpu", batch_size=4, workers=0)
    assert loaded.fingerprint == model_fingerprint(config)
    assert loaded.dim == 16 and loaded.image_size == SIZE
    items = paths(datasets[0], 5)
    np.testing.assert_allclose(loaded.embed(items).vectors,
                               embedder(net, workers=0).embed(items).vectors, atol=1e-6)


def test_bad_embedder_settings_are_refused(net):
    with pytest.raises(ValueError, match="batch_size"):
        embedder(net, batch_size=0)
    with pytest.raises(ValueError, match="image_size"):
        Embedder.from_model(net, {})
