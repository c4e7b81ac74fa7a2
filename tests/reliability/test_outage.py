"""Outage: the MLflow tracking server is down for a minute. Updates fail fast (bounded
retries), the batch stays pending ('accepted'), and it is processed after recovery."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.conftest import MODEL, Project, bootstrap, new_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOWN_SECONDS = 60
BOUND_SECONDS = 120  # an update against a dead server gives up well before this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port, self.proc = folder, port, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 180) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
               "--artifacts-destination", str(self.folder / "artifacts")]
        log = (self.folder / "server.log").open("a")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not start: {self.folder / 'server.log'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def served_by_server(tmp_path: Path, prefect_harness: None,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Project, MlflowServer]]:
    from tasks.runtime import forget_runtimes

    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow", free_port())
    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    p = new_project(tmp_path / "home")
    try:
        yield p, server
    finally:
        server.stop()
        forget_runtimes()


def test_tracking_server_down_for_a_minute(served_by_server: tuple[Project, MlflowServer]) -> None:
    p, server = served_by_server
    bootstrap(p, batches=2)
    ledger = p.ledger()
    champion = ledger.champion(MODEL)
    path = p.drop(p.batch(10), "during-outage.csv")

    server.stop()
    down_at = time.monotonic()
    attempts = []
    while time.monotonic() - down_at < DOWN_SECONDS:
        t0 = time.monotonic()
        code, out = p.cli("ingest", str(path))
        attempts.append(time.monotonic() - t0)
        assert code != 0, out
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "stay pending" in errors[0], out
        assert attempts[-1] < BOUND_SECONDS  # bounded retries: nothing hangs for minutes
        row = ledger.batches(MODEL)[-1]
        assert row.status == "accepted"  # ingested (no MLflow needed), pending
        assert ledger.champion(MODEL) == champion

    server.start()
    recovered_after = time.monotonic() - down_at
    code, out = p.cli("ingest", str(path))  # the next update (here: the file again)
    assert code == 0, out
    row = ledger.batches(MODEL)[-1]
    assert row.status == "processed"
    assert p.runtime().tracker.champion(MODEL) == ledger.champion(MODEL)
    print(f"outage: {len(attempts)} failed update(s) of {max(attempts):.1f} s at most; "
          f"server back after {recovered_after:.0f} s; batch {row.seq} processed")
