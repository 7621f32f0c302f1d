"""Pictures of a `bench map` run: mAP@100 against blur level, and retrieval grids per level.

Plots use a bare matplotlib `Figure` (Agg canvas), never pyplot, so no GUI backend or global
state is involved. Grids reuse the index's contact sheet (`indexer.grid`) and frame each hit
green (same instance as the query) or red; virtual rows are rendered into a temporary folder
first, since the sheet draws files.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from benchmark.embedding import safe_name
from benchmark.evaluate import Evaluation, MethodRun
from benchmark.protocol import BenchmarkSet
from indexer import grid
from retrieval.fileio import atomic_path
from retrieval.manifest import ManifestRow
from retrieval.sim.layout import BENCHMARK_LEVELS

PLOT_NAME = "map_by_blur_level.png"
GRID_DIR = "grids"
GRID_QUERIES = 4  # queries shown per blur level
GRID_HITS = 6
THUMB = 112
POSITIVE = (30, 160, 60)
NEGATIVE = (210, 40, 40)


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
                     queries_per_level: int = GRID_QUERIES, hits: int = GRID_HITS
                     ) -> dict[int, dict[str, str]]:
    """One PNG per blur level and method under out_dir/grids; returns {level: {method: path}}
    with paths relative to `out_dir`. Levels without an evaluated query get no grid."""
    out = Path(out_dir)
    levels = bench.query_levels[evaluation.query_rows]
    chosen = {level: np.flatnonzero(levels == level)[:queries_per_level]
              for level in BENCHMARK_LEVELS}
    written: dict[int, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="grid-pictures-") as scratch:
        pictures = _Pictures(Path(scratch))
        for level, picks in chosen.items():
            if not len(picks):
                continue
            for run in evaluation.runs:
                relative = f"{GRID_DIR}/level{level}_{safe_name(run.name)}.png"
                _draw_grid(bench, evaluation, run, picks, hits, pictures, out / relative)
                written.setdefault(level, {})[run.name] = relative
    return written


def _draw_grid(bench: BenchmarkSet, evaluation: Evaluation, run: MethodRun, picks: np.ndarray,
               hits: int, pictures: _Pictures, path: Path) -> None:
    rows, marks = [], []
    for pick in picks:
        query = int(evaluation.query_rows[pick])
        found = [(int(i), float(s)) for i, s in zip(run.ranked_ids[pick], run.ranked_scores[pick])
                 if i >= 0][:hits]
        rows.append(grid.GridRow(
            query=pictures.path(("query", query), bench.queries[query]),
            hits=[(pictures.path(("database", i), bench.database[i]), s) for i, s in found],
        ))
        marks.append([bench.database_labels[i] == bench.query_labels[query] for i, _ in found])
    grid.draw_grid(rows, path, thumb=THUMB, max_hits=hits)
    _frame_hits(path, marks)


def _frame_hits(path: Path, marks: Sequence[Sequence[bool]]) -> None:
    """Green or red frame around each hit of the sheet `indexer.grid.draw_grid` just wrote."""
    with Image.open(path) as image:
        sheet = image.convert("RGB")
    draw = ImageDraw.Draw(sheet)
    for row, row_marks in enumerate(marks):
        top = grid.GAP + row * (THUMB + grid.CAPTION + grid.GAP)
        for column, positive in enumerate(row_marks, start=1):
            left = grid.GAP + column * (THUMB + grid.GAP)
            draw.rectangle((left - 2, top - 2, left + THUMB + 1, top + THUMB + 1),
                           outline=POSITIVE if positive else NEGATIVE, width=2)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


class _Pictures:
    """Files to show for manifest rows: their own file, or a render of a virtual row."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.known: dict[tuple[str, int], str | None] = {}

    def path(self, key: tuple[str, int], row: ManifestRow) -> str | None:
        if key not in self.known:
            self.known[key] = str(row.path) if row.path is not None else self._render(key, row)
        return self.known[key]

    def _render(self, key: tuple[str, int], row: ManifestRow) -> str | None:
        from retrieval.sim.synth import render_rows  # the simulator is needed for virtual rows only

        try:
            pixels = render_rows([row])[0]
        except Exception:  # rendering can fail in many ways; the sheet shows a grey tile instead
            return None
        target = self.scratch / f"{key[0]}-{key[1]}.png"
        Image.fromarray(pixels).save(target, format="PNG")
        return str(target)
