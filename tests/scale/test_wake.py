"""`greenloop wake` + `serve --idle-exit`: nothing runs between arrivals. wake waits with
nothing loaded, starts serve when a file lands; serve processes it, stops itself once idle
(here after a fixed 10 s) and wake waits again; the next file starts a new serve that
picks up the champion the last one left."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from tests.services import (
    Proc,
    drop,
    free_port,
    greenloop,
    http_ok,
    ledger_rows,
    project_home,
    service_env,
    stream_files,
    wait_until,
)

pytestmark = [pytest.mark.scale, pytest.mark.slow]


def processed(home: Path, n: int) -> bool:
    rows = ledger_rows(home, "SELECT COUNT(*) FROM batches WHERE status='processed'")
    return bool(rows) and rows[0][0] >= n


def serves(wake: Proc) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(wake.p.pid).children()
                if "serve" in " ".join(c.cmdline())]
    except psutil.NoSuchProcess:
        return []


def stopped(wake: Proc, n: int) -> bool:
    return wake.log.read_text().count("serve stopped (exit 0)") >= n


def test_wake_starts_serve_per_burst_and_serve_stops_when_idle(tmp_path: Path) -> None:
    home = project_home(tmp_path)
    config = home / "configs" / "elec2.yaml"
    batches = stream_files(home, config)
    landing = home / "data" / "landing" / "elec2"
    port = free_port()
    wake = Proc(greenloop("wake", "--config", str(config), "--home", str(home), "--port",
                          str(port), "--idle-exit", "10"), tmp_path / "wake.log",
                service_env(home))
    try:
        wait_until(lambda: "waiting for files" in wake.log.read_text(), 60, "wake",
                   procs=(wake,))
        assert not serves(wake) and not http_ok(f"http://127.0.0.1:{port}/api/health")

        for b in batches[:4]:  # a burst: the bootstrap
            drop(b, landing)
        wait_until(lambda: processed(home, 4), 300, "the bootstrap", procs=(wake,))
        wait_until(lambda: stopped(wake, 1), 120, "serve to stop when idle", procs=(wake,))
        assert not serves(wake) and not http_ok(f"http://127.0.0.1:{port}/api/health")

        drop(batches[4], landing)  # the next arrival, after the service stopped
        wait_until(lambda: processed(home, 5), 240, "batch 5 by a new serve", procs=(wake,))
        wait_until(lambda: stopped(wake, 2), 120, "the second serve to stop", procs=(wake,))
    finally:
        wake.stop()

    log = wake.log.read_text()
    assert log.count("starting serve") == 2 and "idle for" in log, log[-3000:]
    assert "start-up:" in log  # each serve measured its own start-up
    # Two sessions, each closed by its own serve (stopped_at), each with its arrivals.
    sessions = ledger_rows(home, "SELECT batches, stopped_at, startup_cpu_seconds "
                                 "FROM service_sessions ORDER BY started_at")
    assert [(n, s is not None) for n, s, _ in sessions] == [(4, True), (1, True)]
    assert all(startup > 1.0 for _, _, startup in sessions)  # the price `auto` weighs
    # The second serve updated the champion the first one left: batch 5 is an update.
    roles = ledger_rows(home, "SELECT role FROM batches WHERE seq=5")
    assert roles == [("update",)]


def test_bad_idle_exit_is_refused_before_anything_starts(tmp_path: Path) -> None:
    home = project_home(tmp_path)
    config = str(home / "configs" / "elec2.yaml")
    env = service_env(home)
    for args in (["serve", "--config", config, "--idle-exit", "0"],
                 ["serve", "--config", config, "--idle-exit", "30", "--no-worker"],
                 ["wake", "--config", config, "--idle-exit", "soon"]):
        r = subprocess.run(greenloop(*args, "--home", str(home)), env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "--idle-exit" in r.stderr


def test_wake_gives_up_on_a_serve_that_cannot_start(tmp_path: Path) -> None:
    """A serve that fails at once (here: its port taken) is not restarted in a loop for
    ever: after three failures in a row wake exits non-zero and says why."""
    import socket

    home = project_home(tmp_path)
    config = home / "configs" / "elec2.yaml"
    landing = home / "data" / "landing" / "elec2"
    drop(stream_files(home, config)[0], landing)  # work waiting: wake starts serve at once
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(greenloop("wake", "--config", str(config), "--home", str(home),
                                     "--port", str(port)), env=service_env(home),
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout.count("starting serve") == 3
    assert f"port {port}" in r.stderr and "3 times in a row" in r.stderr
