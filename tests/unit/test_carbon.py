"""The carbon-window rule: defers only non-urgent full retrains, outside the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from greenloop.carbon import apply_carbon_window, in_window, next_window_hour
from greenloop.config import ScheduleConfig
from greenloop.policy import Decision

WINDOW = ScheduleConfig(carbon_window_hours=[1, 2, 13], urgent_drift_share=0.9)
RETRAIN = Decision("retrain", "drift share 0.60 ≥ 0.5 and quality drop 0.120 ≥ 0.1")


def at(hour: int) -> datetime:
    return datetime(2026, 11, 27, hour, 30, tzinfo=UTC)


def test_off_by_default_never_defers() -> None:
    out = apply_carbon_window(RETRAIN, 0.6, ScheduleConfig(), at(18))
    assert out.decision == RETRAIN and not out.deferred and out.reason == ""


def test_non_urgent_retrain_outside_window_becomes_finetune_with_reason() -> None:
    out = apply_carbon_window(RETRAIN, 0.6, WINDOW, at(18))
    assert out.deferred
    assert out.decision.action == "finetune"  # the batch is still learned from: never dropped
    assert "deferred to the low-carbon window" in out.reason
    assert "next at 01:00" in out.reason and "0.60 < urgent 0.9" in out.reason
    assert RETRAIN.reason in out.decision.reason


def test_urgent_retrain_is_never_deferred() -> None:
    out = apply_carbon_window(RETRAIN, 0.95, WINDOW, at(18))
    assert out.decision == RETRAIN and not out.deferred


def test_bootstrap_retrain_without_drift_is_urgent() -> None:
    first = Decision("retrain", "bootstrap: first model on 4 batches")
    assert apply_carbon_window(first, None, WINDOW, at(18)).decision == first


def test_retrain_inside_window_runs_now() -> None:
    out = apply_carbon_window(RETRAIN, 0.6, WINDOW, at(13))
    assert out.decision == RETRAIN and not out.deferred


@pytest.mark.parametrize("action", ["skip", "finetune"])
def test_pending_retrain_is_carried_out_inside_the_window(action: str) -> None:
    out = apply_carbon_window(Decision(action, "quiet"), 0.1, WINDOW, at(2), pending=True)
    assert out.decision.action == "retrain" and not out.deferred
    assert "deferred full retrain carried out" in out.reason


def test_pending_retrain_waits_outside_the_window() -> None:
    skip = Decision("skip", "quiet")
    out = apply_carbon_window(skip, 0.1, WINDOW, at(5), pending=True)
    assert out.decision == skip and not out.deferred


def test_window_hours_are_utc_and_wrap_to_the_next_day() -> None:
    assert in_window(WINDOW, at(1)) and not in_window(WINDOW, at(3))
    assert next_window_hour(WINDOW, at(14)) == 1
    assert next_window_hour(WINDOW, at(1)) == 2
    local = datetime(2026, 11, 27, 18, 0, tzinfo=timezone(timedelta(hours=2)))
    with pytest.raises(ValueError, match="UTC"):
        apply_carbon_window(RETRAIN, 0.6, WINDOW, local)
