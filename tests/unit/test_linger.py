"""The ski-rental rule that stops an idle `serve`, and how `wake` sees new files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from greenloop.linger import MIN_MEASURE_SECONDS, Linger, parse_linger
from greenloop.wake import FolderWaiter, unreported
from greenloop.watch import LandingWatcher


def test_auto_stays_up_until_idle_has_cost_one_start_up() -> None:
    rule = Linger()
    # 12 CPU-s to start; idle at 0.015 CPU-s per second: 800 s of idle cost one start-up.
    assert rule.seconds(12.0, 0.015 * 120, 120.0) == pytest.approx(800.0)
    assert not rule.should_stop(12.0, 0.015 * 120, 120.0, idle_seconds=799.0)
    assert rule.should_stop(12.0, 0.015 * 120, 120.0, idle_seconds=801.0)
    # A dearer idle (a busier machine, a bigger server) stops sooner.
    assert rule.seconds(12.0, 0.03 * 120, 120.0) == pytest.approx(400.0)


def test_auto_waits_for_a_measured_idle_rate() -> None:
    rule = Linger()
    short = MIN_MEASURE_SECONDS - 1
    assert rule.seconds(12.0, 5.0, short) is None
    assert not rule.should_stop(12.0, 5.0, short, idle_seconds=10_000.0)
    assert rule.seconds(12.0, 0.0, 120.0) == float("inf")  # idling free: never worth stopping


def test_fixed_seconds_ignore_the_meters() -> None:
    rule = Linger(fixed_seconds=30.0)
    assert rule.seconds(100.0, 0.0, 0.0) == 30.0
    assert rule.should_stop(100.0, 0.0, 0.0, idle_seconds=30.0)
    assert not rule.should_stop(100.0, 0.0, 0.0, idle_seconds=29.9)


@pytest.mark.parametrize("text", ["0", "-5", "inf", "nan", "soon", ""])
def test_bad_idle_exit_values_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(ValueError, match="--idle-exit"):
        parse_linger(text)


def test_idle_exit_values() -> None:
    assert parse_linger("auto") == Linger()
    assert parse_linger(" AUTO ") == Linger()
    assert parse_linger("90") == Linger(fixed_seconds=90.0)


def test_unreported_names_what_no_serve_has_seen(tmp_path: Path) -> None:
    landing, state = tmp_path / "landing", tmp_path / "state" / "d.json"
    landing.mkdir()
    (landing / "a.csv").write_text("x\n1\n")
    (landing / ".b.csv.part").write_text("x\n1\n")  # still being written: not yet
    (landing / "empty.csv").write_text("")  # nothing to ingest yet
    assert unreported(landing, state) == ["a.csv"]
    watcher = LandingWatcher(landing, state)
    watcher.poll()
    assert watcher.poll() == [landing / "a.csv"]  # serve's watcher reported it
    assert unreported(landing, state) == []
    (landing / "a.csv").write_text("x\n1\n2\n")  # rewritten with new content
    assert unreported(landing, state) == ["a.csv"]


def test_the_waiter_returns_when_a_file_is_renamed_in(tmp_path: Path) -> None:
    waiter = FolderWaiter([tmp_path], poll_seconds=0.2)
    try:
        if waiter.fd is None:
            pytest.skip("no inotify here: the waiter lists the folder instead")
        started = time.monotonic()
        waiter.wait(timeout_s=0.3)  # nothing lands: back after the timeout
        assert time.monotonic() - started >= 0.25

        def deliver() -> None:
            time.sleep(0.3)
            tmp = tmp_path / ".batch.csv.part"
            tmp.write_text("x\n1\n")
            os.replace(tmp, tmp_path / "batch.csv")

        threading.Thread(target=deliver).start()
        started = time.monotonic()
        waiter.wait(timeout_s=30)
        assert time.monotonic() - started < 10  # woken by the kernel, not the timeout
    finally:
        waiter.close()


def test_a_gap_costs_idle_until_the_linger_then_one_start_up() -> None:
    from greenloop.linger import gap_cpu_seconds

    # 12 CPU-s to start, 0.02 CPU-s per idle second: the linger is 600 s.
    assert gap_cpu_seconds(300.0, 12.0, 0.02) == pytest.approx((6.0, 6.0))
    assert gap_cpu_seconds(3600.0, 12.0, 0.02) == pytest.approx((72.0, 24.0))
    # Never more than twice the cheaper choice in hindsight, whatever the gap.
    for gap in (1.0, 599.0, 601.0, 1200.0, 86400.0):
        on, auto = gap_cpu_seconds(gap, 12.0, 0.02)
        assert auto <= 2 * min(on, 12.0) + 1e-9
    # Nothing measurable spent idle: staying up is free.
    assert gap_cpu_seconds(86400.0, 12.0, 0.0) == (0.0, 0.0)
