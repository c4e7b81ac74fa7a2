"""Carbon-aware deferral of full retrains: a pure rule, off by default.

`schedule.carbon_window_hours` lists the UTC hours in which the grid is usually
cleanest (e.g. midday solar, or night wind: the operator knows their grid). When it
is empty the rule never defers. Otherwise a full retrain decided outside those hours
is *deferred* unless it is urgent (drift share at or above `urgent_drift_share`, or
the champion has no bootstrap yet): the batch is still learned from at once by a
fine-tune (never dropped, never left unprocessed), and a pending full retrain is
recorded; the next update inside a window hour (or the `full-retrain` schedule, set to
a window hour) carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from greenloop.config import ScheduleConfig
from greenloop.policy import Decision


@dataclass(frozen=True)
class Deferral:
    decision: Decision  # what to do now
    deferred: bool  # a full retrain is now pending
    reason: str  # why (logged and recorded), empty when nothing changed


def in_window(cfg: ScheduleConfig, now: datetime) -> bool:
    """No window configured means every hour is fine."""
    return not cfg.carbon_window_hours or now.hour in cfg.carbon_window_hours


def next_window_hour(cfg: ScheduleConfig, now: datetime) -> int | None:
    if not cfg.carbon_window_hours:
        return None
    hours = sorted(set(cfg.carbon_window_hours))
    return next((h for h in hours if h > now.hour), hours[0])


def apply_carbon_window(decision: Decision, drift_share: float | None, cfg: ScheduleConfig,
                        now: datetime, pending: bool = False) -> Deferral:
    """Defer a non-urgent retrain outside the window; run a pending one inside it.

    `now` must be timezone-aware UTC (the window hours are UTC). `pending` says a
    retrain was deferred earlier and has not happened yet.
    """
    if now.tzinfo is None or now.utcoffset() is None or now.utcoffset().total_seconds() != 0:
        raise ValueError("apply_carbon_window needs an aware UTC datetime")
    if not cfg.carbon_window_hours:
        return Deferral(decision, False, "")
    inside = in_window(cfg, now)
    if decision.action == "retrain":
        urgent = drift_share is None or drift_share >= cfg.urgent_drift_share
        if inside or urgent:
            return Deferral(decision, False, "")
        share = f"{drift_share:.2f}"
        why = (f"full retrain deferred to the low-carbon window (UTC hours "
               f"{sorted(cfg.carbon_window_hours)}, next at {next_window_hour(cfg, now):02d}:00; "
               f"now {now:%H:%M}): drift share {share} < urgent {cfg.urgent_drift_share}")
        return Deferral(Decision("finetune", f"{why}; fine-tune now instead ({decision.reason})"),
                        True, why)
    if pending and inside:
        why = f"deferred full retrain carried out in the low-carbon window (UTC {now:%H:%M})"
        return Deferral(Decision("retrain", f"{why}; policy said: {decision.reason}"), False, why)
    return Deferral(decision, False, "")
