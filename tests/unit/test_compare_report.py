"""compare's report says how a full retrain started, so two reports with different
`train.refit_start` are never read as the same recipe."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.compare_report import markdown

SAVED = Path(__file__).parents[2] / "docs/benchmarks/elec2-twenty-first-session-compare.json"


def _recipe_line(report: dict) -> str:
    return next(line for line in markdown(report).splitlines() if "same recipes" in line)


def test_the_report_names_where_a_full_retrain_starts() -> None:
    report = json.loads(SAVED.read_text())
    assert "refit_start" not in report["config"]  # written before the knob: a new model
    assert "from a new model" in _recipe_line(report)
    report["config"]["refit_start"] = "champion"
    assert "from the champion's weights" in _recipe_line(report)
