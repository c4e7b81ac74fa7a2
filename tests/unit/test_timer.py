"""RearmableTimer: CodeCarbon's scheduler interface without a thread per start."""

from __future__ import annotations

import threading
import time

from greenloop import timer
from greenloop.config import EnergyConfig
from greenloop.energy import Meter, tracker


def test_runs_every_interval_while_armed_and_not_after_stop() -> None:
    calls: list[float] = []
    t = timer.RearmableTimer(0.05, lambda: calls.append(time.monotonic()))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.28)
    t.stop()
    stopped_with = len(calls)
    time.sleep(0.15)
    assert 3 <= stopped_with <= 6, calls
    assert len(calls) == stopped_with  # disarmed: no call after stop
    assert calls[0] - t0 >= 0.045  # the first call one interval after start, not at once


def test_a_short_arming_never_fires_and_rearming_restarts_the_interval() -> None:
    calls: list[int] = []
    t = timer.RearmableTimer(0.2, lambda: calls.append(1))
    for _ in range(20):  # phases shorter than the interval, back to back
        t.start()
        time.sleep(0.01)
        t.stop()
    assert calls == []


def test_one_thread_for_many_armings() -> None:
    t = timer.RearmableTimer(1.0, lambda: None)
    before = threading.active_count()
    for _ in range(50):
        t.start()
        t.stop()
    assert threading.active_count() <= before + 1


def test_the_idle_thread_ends_and_a_later_start_works(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(timer, "IDLE_EXIT_SECONDS", 0.05)
    calls: list[int] = []
    t = timer.RearmableTimer(0.02, lambda: calls.append(1))
    t.start()
    t.stop()
    time.sleep(0.2)
    assert t._thread is None  # ended while disarmed
    t.start()
    time.sleep(0.1)
    t.stop()
    assert calls


def test_codecarbon_trackers_get_rearmable_timers_and_still_meter() -> None:
    tr = tracker(EnergyConfig())
    assert isinstance(tr._scheduler, timer.RearmableTimer)
    assert isinstance(tr._scheduler_monitor_power, timer.RearmableTimer)
    meter = Meter(EnergyConfig())
    with meter.phase("work") as reading:
        sum(i * i for i in range(300_000))
    assert reading.energy_kwh > 0 and reading.cpu_seconds > 0


def test_a_long_lived_meter_holds_no_memory_per_phase() -> None:
    """A served process meters phases for months: what a finished phase leaves behind
    must not accumulate (CodeCarbon keeps each stopped task's data unless forgotten)."""
    import tracemalloc

    from greenloop.config import EnergyConfig
    from greenloop.energy import Meter

    meter = Meter(EnergyConfig())
    for _ in range(50):  # warm: imports, the tracker, its hardware
        with meter.phase("ingest"):
            pass
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(400):
            with meter.phase(("ingest", "drift", "evaluate", "overhead")[i % 4]) as r:
                pass
            assert r.wall_seconds > 0
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    assert grown < 400 * 200, f"{grown / 400:.0f} bytes kept per metered phase"
