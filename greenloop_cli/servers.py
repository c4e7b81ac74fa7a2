"""Local servers as child processes: the Prefect server and the MLflow UI.

Both bind 127.0.0.1. A server is started in its own process group (so stopping it
stops its workers too) and health-polled over HTTP before anyone uses it. No Prefect
or MLflow import here: the servers are their own CLIs, run from this venv.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCALHOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A server that did not come up; the message names its log file."""


@dataclass
class Server:
    name: str
    url: str  # the UI address
    health_url: str
    process: subprocess.Popen[bytes] | None  # None: an external server we did not start
    log_path: Path | None = None

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        except ProcessLookupError:
            pass


def venv_bin(name: str) -> str:
    """The console script beside this interpreter (the venv's `prefect`, `mlflow`)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - local URL
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(server: Server, timeout_s: float = 90.0, poll_s: float = 0.5) -> float:
    """Poll until the health URL answers 2xx; returns seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if healthy(server.health_url):
            return time.perf_counter() - t0
        if server.process is not None and server.process.poll() is not None:
            raise ServerError(f"{server.name} exited with code {server.process.returncode}; "
                              f"see {server.log_path}")
        time.sleep(poll_s)
    raise ServerError(f"{server.name} not healthy after {timeout_s:.0f} s at "
                      f"{server.health_url}; see {server.log_path}")


def spawn(name: str, cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
          url: str = "", health_url: str = "") -> Server:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    log.close()
    return Server(name, url, health_url, proc, log_path)


def prefect_api_url(port: int) -> str:
    return f"http://{LOCALHOST}:{port}/api"


# Server services greenloop does not use, off: they wake every 5-20 s for nothing
# (measured idle, issue 9). Kept: the scheduler (cron deployments), triggers and the
# event persister (event-triggered deployments), the task-run recorder (the arrival task
# runs in the UI), the repossessor (concurrency-limit leases). Any of these can be turned
# back on by setting the same variable in the environment.
IDLE_TRIM = {
    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED": "false",  # no subflow cancels
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",  # work-pool worker health (no pool)
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",  # only relabels late runs
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",  # no paused runs
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "60",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "10",
}


def start_prefect_server(state_dir: Path, port: int = 4200) -> Server:
    """`prefect server start` on 127.0.0.1 with its database under `state_dir` unless
    PREFECT_HOME is set (so a project's runs stay with the project)."""
    api = prefect_api_url(port)
    # The UI asks the server where its API is: without these it says port 4200 whatever
    # --port was given.
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
           "PREFECT_SERVER_API_HOST": LOCALHOST, "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_UI_API_URL": api, "PREFECT_API_URL": api}
    if "PREFECT_HOME" not in os.environ:
        env["PREFECT_HOME"] = str(state_dir / "prefect")
    for key, value in IDLE_TRIM.items():
        env.setdefault(key, os.environ.get(key, value))
    server = spawn("prefect server",
                   [venv_bin("prefect"), "server", "start", "--host", LOCALHOST, "--port",
                    str(port)], state_dir / "logs" / "prefect-server.log", env,
                   url=f"http://{LOCALHOST}:{port}", health_url=f"{api}/health")
    return server


def external_prefect(api_url: str) -> Server:
    ui = api_url.removesuffix("/").removesuffix("/api")
    return Server("prefect server", ui, f"{api_url.rstrip('/')}/health", None)


@contextmanager
def prefect_server(state_dir: Path, port: int = 4200,
                   timeout_s: float = 90.0) -> Iterator[Server]:
    """PREFECT_API_URL if set (an existing server), else one started here and stopped
    on exit. Sets PREFECT_API_URL in this process for whatever runs inside."""
    existing = os.environ.get("PREFECT_API_URL")
    server = external_prefect(existing) if existing else start_prefect_server(state_dir, port)
    try:
        wait_healthy(server, timeout_s)
        os.environ["PREFECT_API_URL"] = prefect_api_url(port) if not existing else existing
        yield server
    finally:
        server.stop()
        if not existing:
            os.environ.pop("PREFECT_API_URL", None)


def mlflow_ui_command(tracking_uri: str, artifact_root: Path, port: int = 5000) -> list[str]:
    """`mlflow server` kept lean: one worker (the default spawns several, ~2.9 GB here)."""
    return [venv_bin("mlflow"), "server", "--host", LOCALHOST, "--port", str(port),
            "--workers", "1", "--backend-store-uri", tracking_uri,
            "--default-artifact-root", artifact_root.resolve().as_uri()]


def start_mlflow_ui(tracking_uri: str, artifact_root: Path, log_dir: Path,
                    port: int = 5000) -> Server:
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true"}
    return spawn("mlflow ui", mlflow_ui_command(tracking_uri, artifact_root, port),
                 log_dir / "mlflow-ui.log", env, url=f"http://{LOCALHOST}:{port}",
                 health_url=f"http://{LOCALHOST}:{port}/health")
