"""`bench map` without --data reuses the data set it synthesized earlier, and only that one."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import click
import pytest

from benchmark.commands.bench_map import BENCHMARK_SPLITS, _synthesized_manifest
from retrieval.manifest import MANIFEST_NAME
from retrieval.sim.layout import PRESETS


def _record(folder, sim: dict) -> None:
    chosen = replace(PRESETS["tiny"], distractors=0)
    folder.mkdir()
    (folder / MANIFEST_NAME).write_bytes(b"stand-in: never read when the settings match")
    (folder / "synth.json").write_text(json.dumps({
        "preset": asdict(chosen), "sim": sim, "virtual": True, "splits": list(BENCHMARK_SPLITS)}))


def test_a_folder_written_before_extra_was_dropped_is_reused(tmp_path):
    sim = replace(PRESETS["tiny"], distractors=0).sim_config(0).to_dict()
    _record(tmp_path / "data", {**sim, "extra": {}})  # as earlier versions wrote it
    found = _synthesized_manifest(tmp_path / "data", "tiny", 0, "cpu", progress=False)
    assert found == tmp_path / "data" / MANIFEST_NAME


def test_a_folder_made_with_another_seed_is_refused(tmp_path):
    sim = replace(PRESETS["tiny"], distractors=0).sim_config(1).to_dict()
    _record(tmp_path / "data", sim)
    with pytest.raises(click.ClickException, match="other settings"):
        _synthesized_manifest(tmp_path / "data", "tiny", 0, "cpu", progress=False)
