"""Merge `bench map` reports of one benchmark set into one report.

Re-measuring one changed model on a large benchmark (100,000 distractors: tens of minutes) should
not drop the rows of the models that did not change, nor cost their re-measurement. A report is
merged only with reports made on the same benchmark set, under the same settings that decide the
figures; a later report's rows replace an earlier one's of the same name, together with their
grids, so a picture never shows a model other than the one its row scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.plots import PLOT_NAME, plot_map_by_level
from benchmark.report import JSON_NAME, REPORT_FORMAT, write_report
from retrieval.fileio import write_bytes_atomic

# The settings of `config` that decide the figures (the rest says how they were computed: engine,
# device, workers, batch size), with the value an older report that lacks one (or left it None)
# ran with.
SET_SETTINGS = {"data": None, "preset": None, "seed": None, "synthesized": False, "sim": None,
                "seeds": None, "distractors_requested": None,
                "distractor_objects_requested": None, "distractor_exposures": 1,
                "factory": "auto", "rerank": None}


class ReportMergeError(ValueError):
    """A report that cannot be read or does not belong with the others."""


@dataclass
class SourceReport:
    """One report to merge: where it is, its JSON, and its grid pictures' bytes by path."""

    folder: Path
    report: dict[str, Any]
    grids: dict[str, bytes]


def read_source(path: str | Path) -> SourceReport:
    """Read a `bench map` output folder (or its report.json) with the grid files it names.

    Grids the report names but the folder lacks (a published copy may keep only some) are left
    out of the merge rather than named without a picture.
    """
    file = Path(path)
    if file.is_dir():
        file = file / JSON_NAME
    try:
        report = json.loads(file.read_text())
    except FileNotFoundError as error:
        raise ReportMergeError(f"{file}: no such report (a `bench map` output folder holds "
                               f"{JSON_NAME})") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportMergeError(f"{file}: not a readable report: {error}") from error
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ReportMergeError(f"{file}: not a `bench map` report of format {REPORT_FORMAT}")
    grids = {}
    for by_method in (report.get("files", {}).get("grids") or {}).values():
        for relative in by_method.values():
            picture = file.parent / relative
            if picture.is_file():
                grids[relative] = picture.read_bytes()
    return SourceReport(file.parent, report, grids)


def benchmark_set(report: dict[str, Any]) -> dict[str, Any]:
    """What two reports must share to sit in one table: the data summary and SET_SETTINGS."""
    config = report["config"]
    settings = {key: default if config.get(key) is None else config[key]
                for key, default in SET_SETTINGS.items()}
    return {"data summary": report["data"], **settings}


def merge_reports(sources: Sequence[SourceReport]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One report of every method in `sources` (later ones win) and the grid files it names."""
    if not sources:
        raise ReportMergeError("no reports to merge")
    first = benchmark_set(sources[0].report)
    methods: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    grids: dict[str, dict[str, str]] = {}
    pictures: dict[str, bytes] = {}
    timings: dict[str, float] = {}
    merged_from: list[dict[str, Any]] = []
    for source in sources:
        _check_same_set(sources[0], first, source)
        report = source.report
        for method in report["config"]["methods"]:
            methods[method["name"]] = method
        names = list(report["results"])
        for name in names:
            results[name] = report["results"][name]
            for by_method in grids.values():
                by_method.pop(name, None)  # the replaced model's pictures go with its row
        for level, by_method in (report["files"].get("grids") or {}).items():
            for name, relative in by_method.items():
                if relative in source.grids:
                    grids.setdefault(level, {})[name] = relative
                    pictures[relative] = source.grids[relative]
        if "merged_from" in report:  # its timings are labelled already
            timings.update(report["timings_s"])
            merged_from += report["merged_from"]
        else:
            timings.update({f"{stage} ({', '.join(names)})": seconds
                            for stage, seconds in report["timings_s"].items()})
            merged_from.append({"report": str(source.folder / JSON_NAME), "results": names})
    merged = {
        **sources[-1].report,
        "config": {**sources[-1].report["config"], "methods": list(methods.values())},
        "results": _in_method_order(results, list(methods)),
        "timings_s": timings,
        "merged_from": merged_from,
        "files": {"plot": PLOT_NAME,
                  "grids": {level: by_method for level, by_method in sorted(grids.items())
                            if by_method}},
    }
    kept = {path for by_method in merged["files"]["grids"].values() for path in by_method.values()}
    return merged, {path: data for path, data in pictures.items() if path in kept}


def _in_method_order(results: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """Rows in the order of the methods list, a method's derived rows ("NAME +rerank50") after
    it, as one `bench map` run lists them (report.json itself stores its keys sorted)."""
    def position(name: str) -> tuple[int, str]:
        owner = max((m for m in methods if name == m or name.startswith(f"{m} ")), key=len,
                    default=None)
        return (len(methods) if owner is None else methods.index(owner), name)

    return {name: results[name] for name in sorted(results, key=position)}


def _check_same_set(reference: SourceReport, reference_set: dict[str, Any],
                    source: SourceReport) -> None:
    other = benchmark_set(source.report)
    for key, value in reference_set.items():
        if other[key] != value:
            raise ReportMergeError(
                f"{source.folder / JSON_NAME} and {reference.folder / JSON_NAME} were not made "
                f"on the same benchmark set: their '{key}' differ, so their rows cannot share "
                f"a table")


def write_merged(sources: Sequence[SourceReport], out: str | Path) -> dict[str, Any]:
    """Merge `sources` into `out` (which may be one of them): report, plot and grids.

    Every source is read before anything is written, and each file is replaced atomically;
    grids of `out` that its old report named and the merged one does not are removed.
    """
    out = Path(out)
    merged, pictures = merge_reports(sources)
    stale = set()
    for source in sources:
        if source.folder.resolve() == out.resolve():
            stale = set(source.grids) - set(pictures)
    for relative, data in pictures.items():
        write_bytes_atomic(out / relative, data)
    plot_map_by_level(merged["results"], out / PLOT_NAME)
    write_report(out, merged)
    for relative in stale:
        (out / relative).unlink(missing_ok=True)
    return merged
