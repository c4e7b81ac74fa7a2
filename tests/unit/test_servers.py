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
