"""The service meter's process tree: every process counted once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from greenloop.service import ProcessTree


def test_a_child_named_as_a_root_too_is_counted_once() -> None:
    """`serve` bills its own tree and the Prefect server it started, which is also its
    child: naming both must not count the server twice."""
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nt=time.process_time()\n"
                             "while time.process_time()-t<0.4: pass\ntime.sleep(30)"])
    try:
        time.sleep(1.5)  # its busy loop is over: its CPU time no longer moves
        alone = ProcessTree([busy.pid]).cpu_seconds()
        parent_only = ProcessTree([os.getpid()])
        both = ProcessTree([os.getpid(), busy.pid])
        a, b = parent_only.cpu_seconds(), both.cpu_seconds()
        assert alone >= 0.3
        assert abs(b - a) < 0.1  # not a + alone: the child is in the parent's tree already
    finally:
        busy.kill()
        busy.wait()


def test_the_start_up_price_is_recorded_and_weighed_against_idle(tmp_path) -> None:  # noqa: ANN001
    from greenloop.ledger import Ledger
    from greenloop.service import Window, idle_cost, record_session
    from greenloop.status import standing_cost

    ledger = Ledger(tmp_path / "ledger.sqlite")
    # Two sessions of one idle hour each, 0.02 CPU-s per second idle, one arrival each.
    for sid, startup in (("a", 10.0), ("b", 14.0)):
        record_session(ledger, sid, 0.0, Window(cpu_seconds=73.0, wall_seconds=3601.0),
                       Window(cpu_seconds=1.0, wall_seconds=1.0), 1, "constant", "test",
                       stopped=True, startup_cpu_seconds=startup)
    idle = idle_cost(ledger)
    assert idle is not None and idle.startup_cpu_seconds == 12.0  # the median
    assert idle.idle_cpu_share_of_core == 0.02
    line = standing_cost(ledger)
    # 12 CPU-s / 0.02 CPU-s per s = 600 s: after 10 idle minutes a restart is cheaper.
    assert "start-up 12.0 CPU-s a session" in line and "idle past 10 min" in line
    # A session recorded before this column existed: no price, no claim.
    ledger2 = Ledger(tmp_path / "old.sqlite")
    record_session(ledger2, "c", 0.0, Window(cpu_seconds=73.0, wall_seconds=3601.0),
                   Window(cpu_seconds=1.0, wall_seconds=1.0), 1, "constant", "test")
    assert "start-up" not in standing_cost(ledger2)


def test_status_weighs_serve_against_wake_at_the_gaps_files_arrived_with(tmp_path) -> None:  # noqa: ANN001
    from greenloop.ledger import Ledger
    from greenloop.service import Window, idle_cost, record_session
    from greenloop.status import serve_or_wake

    ledger = Ledger(tmp_path / "ledger.sqlite")
    record_session(ledger, "a", 0.0, Window(cpu_seconds=73.0, wall_seconds=3601.0),
                   Window(cpu_seconds=1.0, wall_seconds=1.0), 1, "constant", "test",
                   stopped=True, startup_cpu_seconds=12.0)
    idle = idle_cost(ledger)  # 0.02 CPU-s per idle second: a restart pays after 600 s
    weekly = serve_or_wake(idle, [0.0, 7 * 86400.0, 14 * 86400.0])
    # A week idle always on: 0.02 * 604800 = 12096 CPU-s; wake: 600 s idle (12) + 12.
    assert weekly is not None and "median 7.0 d over 2" in weekly
    assert "12096.00 CPU-s per arrival always on, 24.00 with `wake`" in weekly
    assert "`greenloop wake` costs less here" in weekly
    # Files a minute apart: the linger never runs out, both cost the same idle.
    busy = serve_or_wake(idle, [0.0, 60.0, 120.0, 180.0])
    assert busy is not None and "1.20 CPU-s per arrival always on, 1.20 with" in busy
    assert "an always-on `serve` costs the same or less here" in busy
    # Nothing to judge by: no gap, or no measured start-up.
    assert serve_or_wake(idle, [5.0]) is None
    assert serve_or_wake(None, [0.0, 60.0]) is None


def test_the_service_meter_holds_no_memory_per_window(tmp_path) -> None:  # noqa: ANN001
    """`serve` opens and closes two CodeCarbon windows per arrival for as long as it
    runs: a closed window must leave nothing behind."""
    import tracemalloc

    from greenloop.config import EnergyConfig
    from greenloop.ledger import Ledger
    from tasks.service import ServiceMeter

    meter = ServiceMeter(EnergyConfig(), [Ledger(tmp_path / "ledger.db")], [os.getpid()])
    try:
        def windows(n: int) -> None:
            for i in range(n):
                assert meter.begin(f"a{i}")
                meter._end(f"a{i}", None)  # what end_later runs a second later

        windows(30)  # warm
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            windows(300)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert meter.n_batches == 330
        grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
        assert grown < 300 * 300, f"{grown / 300:.0f} bytes kept per arrival window"
    finally:
        meter.close()
