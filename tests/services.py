"""Helpers for tests that run greenloop as users do: real servers as child processes.

Each test gets its own project home (a copy of the bundled sources it needs), its own
PREFECT_HOME and free ports on 127.0.0.1, so it never touches another run's state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
T = TypeVar("T")

QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "MLFLOW_DISABLE_TELEMETRY": "true", "CODECARBON_LOG_LEVEL": "error",
         "DVC_NO_ANALYTICS": "1", "GIT_PYTHON_REFRESH": "quiet"}


def require(missing: list[str], what: str, strict_env: str, target: str) -> None:
    """Skip when a system part is missing, or fail when `strict_env` is set (CI targets
    set it, so a missing install cannot pass as a skip there)."""
    if not missing:
        return
    import pytest

    msg = f"{what} needs " + " and ".join(missing) + f"; `{target}` installs them"
    if os.environ.get(strict_env):
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project_home(root: Path, datasets: tuple[str, ...] = ("elec2",)) -> Path:
    """A home with the bundled configs and the sources they read."""
    import yaml

    home = root / "home"
    (home / "configs").mkdir(parents=True, exist_ok=True)
    for name in datasets:
        src = REPO / "configs" / f"{name}.yaml"
        shutil.copy(src, home / "configs" / src.name)
        data_path = Path(yaml.safe_load(src.read_text())["data"]["path"])
        shutil.copytree(REPO / data_path.parent, home / data_path.parent, dirs_exist_ok=True)
    return home


def service_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "GREENLOOP_HOME",
                        "PREFECT_LOGGING_LEVEL")}
    env.update(QUIET)
    env.update({"PREFECT_HOME": str(home / ".prefect"), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                "PREFECT_WORKER_QUERY_SECONDS": "1"})
    env.update(extra)
    return env


class Proc:
    """A child process in its own process group, stopped (with its children) on exit."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str],
                 cwd: Path | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with open(log, "ab") as out:
            self.p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      cwd=cwd, start_new_session=True,
                                      stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.p.poll() is not None:
            return
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(5)
        except ProcessLookupError:
            pass


def wait_until(fn: Callable[[], T | None], timeout_s: float, what: str,
               poll_s: float = 0.5, procs: tuple[Proc, ...] = ()) -> T:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        value = fn()
        if value:
            return value
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.log.name} exited while waiting for {what}:\n{p.tail()}")
        time.sleep(poll_s)
    logs = "\n".join(f"--- {p.log}\n{p.tail()}" for p in procs)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310 - local URL
            return 200 <= r.status < 300
    except OSError:
        return False


# Per API base: the headers a served Prefect server wants (its auth string, a CSRF token).
_LOGINS: dict[str, dict[str, str]] = {}


def login(base: str, home: Path) -> None:
    """Use the auth string `greenloop serve` made for `home` (state/prefect/auth) and a
    CSRF token from the server at `base` for every later `api(base, ...)` call."""
    import base64
    import uuid

    auth = (home / "state" / "prefect" / "auth").read_text().strip()
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    client = str(uuid.uuid4())
    req = urllib.request.Request(f"{base}/csrf-token?client={client}", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - local URL
        token = json.loads(r.read())["token"]
    _LOGINS[base] = {**headers, "Prefect-Csrf-Token": token, "Prefect-Csrf-Client": client}


def api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """POST (or GET without body) to the Prefect REST API (logged in if `login` was
    called for `base`)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}{path}", data=data,
                                 headers={"content-type": "application/json",
                                          **_LOGINS.get(base, {})},
                                 method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - local URL
        return json.loads(r.read())


def flow_runs(base: str, deployment_names: list[str] | None = None) -> list[dict[str, Any]]:
    runs = api(base, "/flow_runs/filter", {"limit": 200, "sort": "EXPECTED_START_TIME_DESC"})
    if deployment_names is None:
        return runs
    ids = {d["id"]: d["name"] for d in api(base, "/deployments/filter", {})}
    return [dict(r, deployment_name=ids.get(r["deployment_id"])) for r in runs
            if ids.get(r["deployment_id"]) in deployment_names]


def stream_files(home: Path, config: Path) -> list[Path]:
    from greenloop.config import load_config
    from greenloop.data import read_table, write_stream

    cfg = load_config(config)
    return write_stream(read_table(home / cfg.data.path), cfg.data,
                        home / "data" / "stream" / cfg.name)


def drop(batch: Path, landing: Path) -> Path:
    """Deliver a batch the safe way: write to a temporary name, then rename."""
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing / f".{batch.name}.part"
    shutil.copyfile(batch, tmp)
    final = landing / batch.name
    os.replace(tmp, final)
    return final


def ledger_rows(home: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    path = home / "state" / "ledger.sqlite"
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def greenloop(*args: str) -> list[str]:
    return [str(BIN / "greenloop"), *args]
