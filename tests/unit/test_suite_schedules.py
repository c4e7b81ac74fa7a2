"""benchmarks/suite.py --schedules: each policy judged against the strongest of the 16
schedules and against the cheapest schedule of its quality (issue 10's framing)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # as when run: suite.py imports simulate.py
    try:
        spec = importlib.util.spec_from_file_location("suite", BENCHMARKS / "suite.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["suite"] = module  # its dataclasses look their module up by name
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


# name -> (accuracy, training row-epochs)
FAMILY = {"periodic-e1-wall": (0.80, 1000), "periodic-e4-w8": (0.797, 200),
          "periodic-e8-w4": (0.70, 50)}


def test_close_to_the_best_at_under_half_the_work_of_its_match(suite: ModuleType) -> None:
    gap, match, ratio, verdict = suite.schedule_cells("classification", 0.796, 90, FAMILY)
    assert gap == "-0.40 pts (periodic-e1-wall)"
    assert match == "periodic-e4-w8 (79.70)"  # the cheapest within 0.5 points of 0.796
    assert ratio == "0.45"
    assert verdict == "close ≤0.5×"


def test_short_of_the_best_and_dearer_than_its_match(suite: ModuleType) -> None:
    gap, match, ratio, verdict = suite.schedule_cells("classification", 0.785, 300, FAMILY)
    assert gap.startswith("-1.50 pts")
    assert match.startswith("periodic-e4-w8")  # better than 0.785: it matches
    assert ratio == "1.50"
    assert verdict == "short"


def test_a_policy_better_than_every_schedule_is_held_against_the_best(
        suite: ModuleType) -> None:
    _, match, ratio, verdict = suite.schedule_cells("classification", 0.82, 500, FAMILY)
    assert match == "periodic-e1-wall (80.00) beaten"
    assert ratio == "0.50"
    assert verdict == "close ≤0.5×"


def test_mae_is_better_lower(suite: ModuleType) -> None:
    family = {"periodic-e1-wall": (40.0, 1000), "periodic-e2-wall": (40.5, 500)}
    gap, match, ratio, verdict = suite.schedule_cells("regression", 41.0, 600, family)
    assert gap == "-2.5 % (periodic-e1-wall)"  # 2.5% worse than the best MAE
    assert match.startswith("periodic-e2-wall")  # 40.5 is within 2% of 41.0
    assert ratio == "1.20"
    assert verdict == "short"
