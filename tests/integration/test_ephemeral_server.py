"""A `greenloop run` killed by SIGKILL takes Prefect's temporary API server with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import make_frame, write_project

ROOT = Path(__file__).resolve().parents[2]


def _temporary_server(parent: psutil.Process) -> psutil.Process | None:
    for child in parent.children(recursive=True):
        try:
            if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_a_killed_run_leaves_no_temporary_prefect_server(tmp_path: Path) -> None:
    config = write_project(tmp_path, make_frame(4000, seed=0), name="orphan", batch_rows=100)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API", "PREFECT_SERVER_SERVICES"))}
    env.update(PREFECT_HOME=str(tmp_path / ".prefect"), PREFECT_LOGGING_LEVEL="WARNING")
    run = subprocess.Popen([sys.executable, "-m", "greenloop_cli", "run", "--config",
                            str(config), "--home", str(tmp_path)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        deadline = time.monotonic() + 180
        while server is None and time.monotonic() < deadline and run.poll() is None:
            server = _temporary_server(psutil.Process(run.pid))
            time.sleep(0.2)
        assert server is not None, "no temporary Prefect server was started"
        # The CLI's temporary server, too, records task runs in batches (issue 11).
        assert server.environ().get(
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE") == "20"
        time.sleep(2)  # the run is under way, its server serving
        os.kill(run.pid, signal.SIGKILL)
        run.wait(30)
        gone, alive = psutil.wait_procs([server], timeout=20)
        assert server in gone and not alive, f"pid {server.pid} outlived the killed run"
    finally:
        if run.poll() is None:
            run.kill()
        if server is not None and server.is_running():
            server.kill()
