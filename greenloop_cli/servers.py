"""Local servers as child processes: the Prefect server and the MLflow UI.

Both bind 127.0.0.1. A server is started in its own process group (so stopping it
stops its workers too) and health-polled over HTTP before anyone uses it. No Prefect
or MLflow import here: the servers are their own CLIs, run from this venv.

The Prefect server started here is closed to whoever lacks the project's auth string
(`state/prefect/auth`, mode 0600): binding 127.0.0.1 keeps other machines out, not other
local users, nor web pages open in the operator's browser (hence CSRF protection and
CORS limited to the server's own origin).
"""

from __future__ import annotations

import base64
import ctypes
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LOCALHOST = "127.0.0.1"
AUTH_USER = "greenloop"
AUTH_ENV = "PREFECT_API_AUTH_STRING"  # the client side (Prefect's own setting)


class ServerError(RuntimeError):
    """A server that did not come up; the message names its log file."""


@dataclass
class Server:
    name: str
    url: str  # the UI address
    health_url: str
    process: subprocess.Popen[bytes] | None  # None: an external server we did not start
    log_path: Path | None = None
    auth: str | None = field(default=None, repr=False)  # never printed

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
    """Poll until the health URL answers 2xx; returns seconds waited. A server started
    with an auth string must also prove it knows it (see `is_ours`): a health answer
    alone could come from any process that took the port first."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if healthy(server.health_url):
            if server.auth is not None and not is_ours(server):
                raise ServerError(f"{server.name}: the server answering at {server.url} is "
                                  f"not the one started here; see {server.log_path}")
            return time.perf_counter() - t0
        if server.process is not None and server.process.poll() is not None:
            raise ServerError(f"{server.name} exited with code {server.process.returncode}; "
                              f"see {server.log_path}")
        time.sleep(poll_s)
    raise ServerError(f"{server.name} not healthy after {timeout_s:.0f} s at "
                      f"{server.health_url}; see {server.log_path}")


# Linux's prctl, loaded here, in the parent: the child between fork and exec only calls it.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def dies_with(parent_pid: int) -> Callable[[], None] | None:
    """A preexec hook: the child gets SIGTERM when the thread that started it dies, even
    by SIGKILL (out of memory, a supervisor's kill). Without it a killed `serve` left its
    Prefect server (its own session) holding the port, and the restarted `serve` refused
    the port as a foreign server's (found by the served soak). None off Linux."""
    if _LIBC is None:
        return None

    def hook() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before the request took effect
            os._exit(1)

    return hook


def spawn(name: str, cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
          url: str = "", health_url: str = "") -> Server:
    """Start a server in its own session (stopping it stops its workers too), tied to
    this process's life: started from the main thread, it stops when this process does."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True,
                            preexec_fn=dies_with(os.getpid()))  # noqa: PLW1509 - see there
    log.close()
    return Server(name, url, health_url, proc, log_path)


def prefect_api_url(port: int) -> str:
    return f"http://{LOCALHOST}:{port}/api"


def basic_auth_header(auth: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def _status(url: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - local URL
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0


def is_ours(server: Server) -> bool:
    """The server refuses a request without our auth string and accepts one with it:
    only a server started with this string does both."""
    probe = server.health_url.removesuffix("/health") + "/admin/version"
    return (_status(probe) == 401
            and _status(probe, basic_auth_header(server.auth or "")) == 200)


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """Does anything accept connections on host:port?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def auth_path(state_dir: Path) -> Path:
    return state_dir / "prefect" / "auth"


def read_auth(state_dir: Path) -> str | None:
    """The project's Prefect auth string, or None if no server was ever started here.
    Refused if group or others may read it: then it is no secret any more."""
    path = auth_path(state_dir)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerError(f"{path} is readable by other users (mode {stat.filemode(mode)}): "
                          f"delete it (a new auth string is made at the next serve) or "
                          f"`chmod 600` it")
    auth = path.read_text().strip()
    if not auth:
        raise ServerError(f"{path} is empty: delete it (a new one is made at the next serve)")
    return auth


def project_auth(state_dir: Path) -> str:
    """The auth string of the project's Prefect server: made once per project home and
    kept (mode 0600), so workers with the same home (a shared filesystem) can read it."""
    existing = read_auth(state_dir)
    if existing is not None:
        return existing
    path = auth_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".auth.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{AUTH_USER}:{secrets.token_urlsafe(32)}\n")
        f.flush()
        os.fsync(f.fileno())
    try:  # link, not rename: two serves starting at once keep the first one's string
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return read_auth(state_dir) or ""


def use_project_auth(home: Path) -> None:
    """For clients (worker, watch, deploy): the project's auth string, unless
    PREFECT_API_AUTH_STRING is set. Call before Prefect is imported."""
    if not os.environ.get(AUTH_ENV):
        auth = read_auth(home / "state")
        if auth is not None:
            os.environ[AUTH_ENV] = auth


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

# The task-run recorder writes each state event of a task run in its own transaction by
# default (batch size 1): ~32 ms of the server's CPU per task run here, more than the
# server spent on anything else an arrival asks of it. Batched, an arrival's events are
# one write within a second: ~13 ms (benchmarks/prefect_server_cost.py, issue 11). A task
# run shows in the UI at most a second later. For greenloop's servers only, the
# temporary one included; a server the user runs keeps its own settings.
RECORDER_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "20",
    # An int of seconds: Prefect truncates it, and 0 would flush in a busy loop.
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


def start_prefect_server(state_dir: Path, port: int = 4200) -> Server:
    """`prefect server start` on 127.0.0.1 with its database under `state_dir` unless
    PREFECT_HOME is set (so a project's runs stay with the project), closed with the
    project's auth string, CSRF protection on and CORS limited to its own origin.
    Refuses to start when something already listens on the port."""
    if port_in_use(port):
        raise ServerError(f"port {port} on {LOCALHOST} is already taken by another "
                          f"server: choose another --port, or set PREFECT_API_URL to use "
                          f"an existing Prefect server")
    api, origin = prefect_api_url(port), f"http://{LOCALHOST}:{port}"
    auth = project_auth(state_dir)
    # The UI asks the server where its API is: without these it says port 4200 whatever
    # --port was given.
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
           "PREFECT_SERVER_API_HOST": LOCALHOST, "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_UI_API_URL": api, "PREFECT_API_URL": api,
           "PREFECT_SERVER_API_AUTH_STRING": auth, AUTH_ENV: auth,
           "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
           "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": origin}
    if "PREFECT_HOME" not in os.environ:
        env["PREFECT_HOME"] = str(state_dir / "prefect")
    for key, value in {**IDLE_TRIM, **RECORDER_BATCHING}.items():
        env.setdefault(key, os.environ.get(key, value))
    server = spawn("prefect server",
                   [venv_bin("prefect"), "server", "start", "--host", LOCALHOST, "--port",
                    str(port)], state_dir / "logs" / "prefect-server.log", env,
                   url=origin, health_url=f"{api}/health")
    server.auth = auth
    return server


def external_prefect(api_url: str) -> Server:
    ui = api_url.removesuffix("/").removesuffix("/api")
    return Server("prefect server", ui, f"{api_url.rstrip('/')}/health", None)


@contextmanager
def prefect_server(state_dir: Path, port: int = 4200,
                   timeout_s: float = 90.0) -> Iterator[Server]:
    """PREFECT_API_URL if set (an existing server, used as its user configured it), else
    one started here and stopped on exit. Sets PREFECT_API_URL (and, for a server
    started here, PREFECT_API_AUTH_STRING) in this process for whatever runs inside."""
    existing = os.environ.get("PREFECT_API_URL")
    server = external_prefect(existing) if existing else start_prefect_server(state_dir, port)
    before = os.environ.get(AUTH_ENV)
    try:
        wait_healthy(server, timeout_s)
        os.environ["PREFECT_API_URL"] = prefect_api_url(port) if not existing else existing
        if server.auth is not None:
            os.environ[AUTH_ENV] = server.auth
        yield server
    finally:
        server.stop()
        if not existing:
            os.environ.pop("PREFECT_API_URL", None)
            if before is None:
                os.environ.pop(AUTH_ENV, None)
            else:
                os.environ[AUTH_ENV] = before


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
