"""Stored simulator settings: settings this version does not know are refused, never dropped."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from retrieval.manifest import (
    MANIFEST_SCHEMA,
    ManifestError,
    manifest_items,
    read_manifest,
    sim_config_of,
    write_manifest,
)
from retrieval.sim import SimConfig

SIM_KEY = b"blur_retrieval.sim_config"


def test_settings_round_trip() -> None:
    config = SimConfig(height=32, width=48, seed=3, streak_ratio=(0.5, 2.0))
    assert SimConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_unknown_settings_are_refused_by_name() -> None:
    stored = {**SimConfig().to_dict(), "motion_model": "spline", "zoom": 2}
    with pytest.raises(ValueError, match=r"unknown simulator settings \['motion_model', 'zoom'\]"):
        SimConfig.from_dict(stored)


def test_the_retired_extra_field_is_accepted_only_empty() -> None:
    assert "extra" not in SimConfig().to_dict()
    assert SimConfig.from_dict({**SimConfig().to_dict(), "extra": {}}) == SimConfig()
    with pytest.raises(ValueError, match=r"\['extra'\]"):
        SimConfig.from_dict({**SimConfig().to_dict(), "extra": {"gamma": 2.2}})


def write_virtual_manifest(path, sim_settings: dict) -> None:
    columns = {name: [] for name in MANIFEST_SCHEMA.names}
    table = write_manifest(path, columns, SimConfig())
    table = table.replace_schema_metadata({SIM_KEY: json.dumps(sim_settings)})
    pq.write_table(table, path)


def test_manifest_from_a_newer_version_is_refused_naming_file_and_key(tmp_path) -> None:
    path = tmp_path / "manifest.parquet"
    write_virtual_manifest(path, {**SimConfig().to_dict(), "lens_distortion": 0.1})
    for read in (read_manifest, manifest_items):
        with pytest.raises(ManifestError, match=rf"{re.escape(str(path))}: .*unknown simulator settings "
                                                r"\['lens_distortion'\]"):
            read(path)


def test_manifest_written_before_extra_was_removed_still_reads(tmp_path) -> None:
    path = tmp_path / "manifest.parquet"
    write_virtual_manifest(path, {**SimConfig(height=32, width=48).to_dict(), "extra": {}})
    assert sim_config_of(read_manifest(path)) == SimConfig(height=32, width=48)
