"""Pictures of a `bench map` run: mAP@100 against blur level, and retrieval grids per level.

Plots use a bare matplotlib `Figure` (Agg canvas), never pyplot, so no GUI backend or global
state is involved. Grids reuse the index's contact sheet (`indexer.grid`) and frame each hit
green (same instance as the query) or red; virtual rows are rendered into a temporary folder
first, since the sheet draws files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from tqdm.auto import tqdm

from benchmark.evaluate import Evaluation, MethodRun
from benchmark.protocol import BenchmarkSet
from benchmark.vector_cache import safe_name
from indexer import grid
from retrieval.fileio import atomic_path
from retrieval.manifest import ManifestRow
from retrieval.sim.layout import BENCHMARK_LEVELS

PLOT_NAME = "map_by_blur_level.png"
GRID_DIR = "grids"
GRID_QUERIES = 4  # queries shown per blur level
GRID_HITS = 5
THUMB = 112
RENDER_BATCH = 64


def plot_map_by_level(results: dict[str, dict], out_path: str | Path,
                      key: str = "map100") -> Path:
    """One line per method: mean `key` (in %) at blur levels 1..6; empty levels leave gaps."""
    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    axes = figure.add_subplot()
    for name, result in results.items():
        values = [result["levels"][str(level)][key] for level in BENCHMARK_LEVELS]
        percent = [np.nan if v is None else 100 * v for v in values]
        axes.plot(BENCHMARK_LEVELS, percent, marker="o", label=name)
    axes.set_xlabel("blur level of the query")
    axes.set_ylabel("mAP@100 (%)")
    axes.set_xticks(BENCHMARK_LEVELS)
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(out_path)


def draw_level_grids(bench: BenchmarkSet, evaluation: Evaluation, out_dir: str | Path,
                     queries_per_level: int = GRID_QUERIES, hits: int = GRID_HITS,
                     progress: bool = False) -> dict[int, dict[str, str]]:
    """One PNG per blur level and method under out_dir/grids; returns {level: {method: path}}
    with paths relative to `out_dir`. Levels without an evaluated query get no grid."""
    out = Path(out_dir)
    levels = bench.query_levels[evaluation.query_rows]
    sheets = {}
    for level in BENCHMARK_LEVELS:
        picks = np.flatnonzero(levels == level)[:queries_per_level]
        if not len(picks):
            continue
        for run in evaluation.runs:
            sheets[level, run.name] = _sheet(bench, evaluation, run, picks, hits)
    shown = {key: row for sheet in sheets.values() for query, found in sheet
             for key, row in [query, *((key, row) for key, row, _, _ in found)]}
    written: dict[int, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="grid-pictures-") as scratch:
        pictures = _picture_files(shown, Path(scratch), progress)
        for (level, name), sheet in tqdm(sheets.items(), unit="grid", desc="grids",
                                         disable=not progress, dynamic_ncols=True):
            relative = f"{GRID_DIR}/level{level}_{safe_name(name)}.png"
            rows = [grid.GridRow(query=pictures[query[0]],
                                 hits=[(pictures[key], score) for key, _, score, _ in found],
                                 correct=[positive for *_, positive in found])
                    for query, found in sheet]
            grid.draw_grid(rows, out / relative, thumb=THUMB, max_hits=hits)
            written.setdefault(level, {})[name] = relative
    return written


_Key = tuple[str, int]  # ("query" | "database", position)
_Sheet = list[tuple[tuple[_Key, ManifestRow], list[tuple[_Key, ManifestRow, float, bool]]]]


def _sheet(bench: BenchmarkSet, evaluation: Evaluation, run: MethodRun, picks: np.ndarray,
           hits: int) -> _Sheet:
    """Per picked query: the query row and its top hits (row, score, is a positive)."""
    sheet = []
    for pick in picks:
        query = int(evaluation.query_rows[pick])
        found = [(("database", int(i)), bench.database[int(i)], float(score),
                  bool(bench.database_labels[i] == bench.query_labels[query]))
                 for i, score in zip(run.ranked_ids[pick], run.ranked_scores[pick]) if i >= 0]
        sheet.append(((("query", query), bench.queries[query]), found[:hits]))
    return sheet


def _picture_files(rows: dict[_Key, ManifestRow], scratch: Path, progress: bool
                   ) -> dict[_Key, str | None]:
    """A file per row: its own, or a render of a virtual row written to `scratch` (None when it
    cannot be rendered: the sheet then shows a grey tile)."""
    from retrieval.synth import render_rows  # the simulator is needed for virtual rows only

    files: dict[_Key, str | None] = {key: None if row.path is None else str(row.path)
                                     for key, row in rows.items()}
    virtual = [key for key, row in rows.items() if row.path is None]
    with tqdm(total=len(virtual), unit="img", desc="render grid pictures",
              disable=not progress or not virtual, dynamic_ncols=True) as bar:
        for start in range(0, len(virtual), RENDER_BATCH):
            batch = virtual[start : start + RENDER_BATCH]
            try:
                rendered = render_rows([rows[key] for key in batch])
            except Exception:  # rendering can fail in many ways; those pictures stay grey
                rendered = [None] * len(batch)
            for key, pixels in zip(batch, rendered):
                if pixels is not None:
                    files[key] = str(scratch / f"{key[0]}-{key[1]}.png")
                    Image.fromarray(pixels).save(files[key], format="PNG")
            bar.update(len(batch))
    return files
