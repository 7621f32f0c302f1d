"""The analysis scripts' one-line summary of validation metrics."""

from __future__ import annotations

from retrieval.train.diagnostics import summary_line


def test_summary_line_gives_clean_and_distractor_figures_in_percent():
    metrics = {"map@100": 0.1778, "per_level": {"6": 0.1226}, "distractors": 10000,
               "without_distractors": {"map@100": 0.4093, "per_level": {"6": 0.338}}}
    assert summary_line("as trained", metrics) == (
        "as trained: mAP@100 40.93 (BL6 33.80); among 10,000 distractors 17.78 (BL6 12.26)")


def test_summary_line_without_distractors_and_an_empty_level():
    metrics = {"map@100": 0.5, "per_level": {"6": None}}
    assert summary_line("x", metrics) == "x: mAP@100 50.00 (BL6 n/a)"
