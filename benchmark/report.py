"""The results of `bench map` as files anyone can read: report.json, report.md, a terminal table.

Values are fractions in JSON and percentages (two decimals, as in the paper's tables) in the
tables; a blur level without queries shows "n/a". Definitions: docs/method.md, "Metrics".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.evaluate import Evaluation, Method
from benchmark.protocol import BenchmarkSet
from benchmark.scoring import KNN_KEY, KNN_LABEL, METRICS, RANK_DEPTH, TIES
from indexer.factory import TRAIN_SEED
from indexer.tuning import QUERY_SEED
from retrieval.fileio import write_json_atomic, write_text_atomic
from retrieval.metrics import TIE_SEED
from retrieval.sim.layout import BENCHMARK_LEVELS

REPORT_FORMAT = 1
JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"
ERRORS_KEPT = 100
MISSING = "n/a"


def build_report(config: dict[str, Any], bench: BenchmarkSet, evaluation: Evaluation,
                 methods: Sequence[Method], files: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to trust and reproduce the figures, as plain JSON values."""
    sim = bench.queries.sim
    items = bench.items()
    return _jsonable({
        "format": REPORT_FORMAT,
        "config": {
            **config,
            "methods": [{"name": m.name, "checkpoint": m.checkpoint,
                         "fingerprint": m.embedder.fingerprint, "config": m.embedder.config}
                        for m in methods],
            "sim": None if sim is None else sim.to_dict(),
            "seeds": {"simulator": None if sim is None else sim.seed,
                      "faiss_training": TRAIN_SEED, "nprobe_tuning_queries": QUERY_SEED,
                      "tie_break": TIE_SEED},
        },
        "data": {
            **bench.summary(),
            "evaluated_queries": len(evaluation.query_rows),
            "embedding_errors": len(evaluation.errors),
            "errors": [{"image_id": items[i].image_id, "message": m}
                       for i, m in evaluation.errors[:ERRORS_KEPT]],
        },
        "timings_s": evaluation.timings,
        "results": {run.name: {"factory": run.factory, "approximate": run.approximate,
                               "tuned": run.tuned, **run.summary}
                    for run in evaluation.runs},
        "files": files,
    })


def _jsonable(value: Any) -> Any:
    """A JSON round trip: numpy scalars become numbers, sets sorted lists, int keys strings."""
    def fallback(obj: Any) -> Any:
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=str)
        if hasattr(obj, "item"):  # numpy scalar
            return obj.item()
        return str(obj)

    return json.loads(json.dumps(value, default=fallback))


def write_report(out_dir: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    out = Path(out_dir)
    write_json_atomic(out / JSON_NAME, report)
    write_text_atomic(out / MARKDOWN_NAME, markdown_report(report))
    return out / JSON_NAME, out / MARKDOWN_NAME


def metric_table(report: dict[str, Any], key: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per method) of one metric: all queries, then levels 1..6."""
    results = report["results"]
    first = next(iter(results.values()))
    columns = [("all", first["overall"])] + [
        (f"BL{level}", first["levels"][str(level)]) for level in BENCHMARK_LEVELS
    ]
    header = ["method"] + [f"{name} (n={entry['queries']})" for name, entry in columns]
    rows = []
    for name, result in results.items():
        entries = [result["overall"]] + [result["levels"][str(lv)] for lv in BENCHMARK_LEVELS]
        rows.append([name] + [_percent(entry[key]) for entry in entries])
    return header, rows


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.2f}"


def terminal_table(report: dict[str, Any], key: str = "map100") -> str:
    header, rows = metric_table(report, key)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0])]
                         + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])])

    title = f"{_label(key)} by blur level (%)"
    return "\n".join([title, line(header), line(["-" * w for w in widths]),
                      *(line(row) for row in rows)])


def _label(key: str) -> str:
    return KNN_LABEL if key == KNN_KEY else METRICS[key]


def _markdown_table(report: dict[str, Any], key: str) -> list[str]:
    header, rows = metric_table(report, key)
    return ["| " + " | ".join(header) + " |",
            "|" + "---|" + "---:|" * (len(header) - 1),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _exposures_text(config: dict[str, Any]) -> str:
    exposures = int(config.get("distractor_exposures") or 1)
    return f", {exposures} exposures of each virtual distractor trajectory" if exposures > 1 else ""


def markdown_report(report: dict[str, Any]) -> str:
    data, config = report["data"], report["config"]
    lines = [
        "# Retrieval by blur level", "",
        f"Data: `{data['manifest']}`: {data['queries']} queries at blur levels 1..6 "
        f"({data['evaluated_queries']} evaluated), {data['database']} database images, "
        f"{data['distractors']} distractors ({data['manifest_distractors']} from the manifest, "
        f"{data['virtual_distractors']} virtual; {data.get('distractor_objects', 'n/a')} distinct "
        f"objects{_exposures_text(config)}). Queries without any positive in the database: "
        f"{data['queries_without_positive']}; query rows outside levels 1..6 left out: "
        f"{data['queries_outside_levels']}; items that could not be embedded: "
        f"{data['embedding_errors']}. Database images per blur level: "
        f"{_levels_text(data['database_by_level'])}.", "",
        f"| method | checkpoint | fingerprint | index | positive tied with a non-positive: at rank "
        f"{RANK_DEPTH} / in the top {RANK_DEPTH} |", "|---|---|---|---|---:|",
    ]
    for method in config["methods"]:
        result = report["results"][method["name"]]
        kind = "approximate" if result["approximate"] else "exact"
        ties = " / ".join(str(result["overall"][key]) for key in TIES)
        lines.append(f"| {method['name']} | `{method['checkpoint']}` | `{method['fingerprint']}` "
                     f"| `{result['factory']}` ({kind}) | {ties} |")
    lines.append("")
    lines += _merged_text(report.get("merged_from"))
    for key in METRICS:
        lines += [f"## {METRICS[key]}", "", *_markdown_table(report, key)]
    if any(result["approximate"] for result in report["results"].values()):
        lines += [f"## {KNN_LABEL}", "", *_markdown_table(report, KNN_KEY)]
    lines += _definitions()
    lines += ["## Timings", "", "| stage | seconds |", "|---|---:|",
              *(f"| {stage} | {seconds:.1f} |" for stage, seconds in report["timings_s"].items()),
              ""]
    lines += _images(report["files"])
    return "\n".join(lines)


def _merged_text(sources: list[dict[str, Any]] | None) -> list[str]:
    """Which runs a merged report's rows come from (`bench merge`)."""
    if not sources:
        return []
    parts = [f"`{source['report']}` ({', '.join(source['results'])})" for source in sources]
    return ["Merged by `bench merge` from runs on this benchmark set, later rows replacing "
            "earlier ones of the same name: " + "; ".join(parts) + ".", ""]


def _levels_text(counts: dict[str, int]) -> str:
    return ", ".join(f"BL{level}: {n}" for level, n in counts.items()) or "unknown"


def _definitions() -> list[str]:
    return [
        '## Definitions (docs/method.md, "Metrics")', "",
        "- mAP@100: AP@100 = (1/min(m, 100)) * sum_{i<=100} P(i) rel_i, m = positives of the "
        "query in the database (Google-Landmarks style, the headline figure).",
        "- mAP@100 (paper protocol): the same sum divided by the positives found in the top 100,"
        " as the paper's code does; it inflates scores, shown only for comparison with the paper.",
        "- mAP (full ranking): the sum over the whole ranking divided by m.",
        "- R@k: share of queries with at least one positive in the top k.",
        "- Means are over queries with at least one positive.",
        "- Ties: equal scores are ordered by a seeded pseudo-random key of each database image's "
        f"id (seed {TIE_SEED}), the same for every method, never by database position; the "
        "method table counts the queries (of the exact ranking) where a positive ties a "
        f"non-positive at rank {RANK_DEPTH} or within the top {RANK_DEPTH}.", "",
    ]


def _images(files: dict[str, Any]) -> list[str]:
    lines = []
    if files.get("plot"):
        lines += ["## mAP@100 against blur level", "", f"![mAP@100 by blur level]({files['plot']})",
                  ""]
    grids = files.get("grids") or {}
    if grids:
        lines += ["## Retrieval grids", "",
                  "Each row: a query (blue frame), then its top hits; green = same instance, "
                  "red = another.", ""]
        for level, by_method in grids.items():
            for method, path in by_method.items():
                lines += [f"### BL{level}, {method}", "", f"![BL{level} {method}]({path})", ""]
    return lines
