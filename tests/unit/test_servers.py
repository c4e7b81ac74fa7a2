"""A server started by `greenloop serve` stops when serve dies, even by SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SPAWNING_PARENT = """
import sys, time
from pathlib import Path
from greenloop_cli.servers import spawn
server = spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
               Path(sys.argv[1]) / "sleeper.log")
print(server.process.pid, flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_spawned_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", SPAWNING_PARENT, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        time.sleep(0.5)
        assert not gone(server_pid)  # running while its parent lives
        parent.kill()  # SIGKILL: no cleanup code of the parent runs
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not gone(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(server_pid), "the server outlived the process that started it"
    finally:
        parent.kill()


def _server_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment `start_prefect_server` gives the `prefect server` it spawns."""
    from greenloop_cli import servers

    seen: dict[str, str] = {}

    def fake_spawn(name: str, cmd: list[str], log_path: Path, env: dict[str, str],
                   url: str = "", health_url: str = "") -> servers.Server:
        seen.update(env)
        return servers.Server(name, url, health_url, None)

    monkeypatch.setattr(servers, "spawn", fake_spawn)
    monkeypatch.setattr(servers, "port_in_use", lambda port: False)
    servers.start_prefect_server(tmp_path / "state", port=4299)
    return seen


def test_the_served_prefect_server_records_task_runs_in_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
    monkeypatch.delenv(batch, raising=False)
    env = _server_env(tmp_path, monkeypatch)
    assert env[batch] == "20"
    assert env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] == "1"
    assert env["PREFECT_SERVER_SERVICES_FOREMAN_ENABLED"] == "false"
    monkeypatch.setenv(batch, "1")  # the user's own setting wins
    assert _server_env(tmp_path, monkeypatch)[batch] == "1"
