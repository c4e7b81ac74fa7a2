"""Nobody in: local-only servers, weights never unpickled, no secrets in configs, and no
config value or file name that reads or writes outside the data and state folders."""

from __future__ import annotations

import ast
import base64
import json
import os
import pickle
import re
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from greenloop.config import ConfigError, load_config
from greenloop.model import TabularModel
from greenloop.workspace import OutsideWorkspace, Workspace
from tests.conftest import make_frame, write_project
from tests.reliability.conftest import ROOT


def test_servers_bind_localhost_only() -> None:
    from greenloop_cli import servers

    assert servers.LOCALHOST == "127.0.0.1"
    offenders = []
    for folder in ("greenloop", "tasks", "flows", "configs", "scripts"):
        for f in (ROOT / folder).rglob("*.py"):
            text = f.read_text()
            if "0.0.0.0" in text or re.search(r"""host\s*=\s*["'](?!127\.0\.0\.1)""", text):
                offenders.append(str(f.relative_to(ROOT)))
    assert offenders == []
    cmd = servers.mlflow_ui_command("sqlite:///x.db", Path("/tmp/a"), 5999)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - what a malicious state file would contain
        return (Path.write_text, (self.marker, "pwned"))


def test_malicious_state_file_is_refused(tmp_path: Path) -> None:
    """A state_dict.pt that is really a pickle with code in it: load refuses it
    (weights_only=True) and the code never runs."""
    frame = make_frame(120, seed=0)
    from greenloop.config import ModelConfig
    from greenloop.data import Schema

    schema = Schema("y", tuple(f"x{i}" for i in range(5)), (), ())
    model = TabularModel.create(frame, schema, "classification", ModelConfig(hidden=[8]), seed=0)
    model.save(tmp_path / "v1")
    assert len(TabularModel.load(tmp_path / "v1").predict(frame)) == 120  # the honest file loads

    marker = tmp_path / "marker.txt"
    torch.save({"0.weight": _Exploit(marker)}, tmp_path / "v1" / "state_dict.pt")
    with pytest.raises(pickle.UnpicklingError):
        TabularModel.load(tmp_path / "v1")
    assert not marker.exists()


def test_model_loading_never_unpickles() -> None:
    """Every torch.load in the code passes weights_only=True; no pickle.load anywhere."""
    for folder in ("greenloop", "tasks", "flows"):
        for f in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    owner = getattr(node.func.value, "id", "")
                    if (owner, node.func.attr) == ("torch", "load"):
                        kw = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                        assert kw.get("weights_only") is True, f"{f}:{node.lineno}"
                    assert (owner, node.func.attr) not in {("pickle", "load"),
                                                           ("pickle", "loads")}, f


SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|credential)", re.I)


def _walk(value: object, path: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _walk(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [kv for i, v in enumerate(value) for kv in _walk(v, f"{path}[{i}]")]
    return [(path, value)]


def test_no_secrets_in_configs() -> None:
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for cfg in configs:
        for key, value in _walk(yaml.safe_load(cfg.read_text())):
            assert not (SECRET_KEY.search(key) and value), f"{cfg.name}{key}"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)), f"{cfg.name}{key}"


def test_data_path_outside_the_data_folder_is_refused(tmp_path: Path) -> None:
    config = write_project(tmp_path, make_frame(50, 0), name="evil",
                           overrides={"data": {"path": "../../etc/passwd"}})
    cfg = load_config(config)
    with pytest.raises(OutsideWorkspace):
        Workspace.from_env(tmp_path).source(cfg.data.path)
    for sneaky in ("/etc/passwd", "data/../../x.csv", "data/sources/../../../etc/passwd"):
        with pytest.raises(OutsideWorkspace):
            Workspace.from_env(tmp_path).source(sneaky)
    inside = Workspace.from_env(tmp_path).source("data/sources/evil/source.csv")
    assert inside.is_file()


def test_the_console_says_a_data_path_outside_the_home_in_one_line(tmp_path: Path) -> None:
    """A new user's data-only config pointing at a CSV elsewhere: the command exits 2
    with what to do, not a traceback (the console entry, in a subprocess)."""
    config = write_project(tmp_path / "home", make_frame(50, 0), name="elsewhere",
                           overrides={"data": {"path": str(tmp_path / "away.csv")}})
    done = subprocess.run([sys.executable, "-m", "greenloop_cli", "compare", "--config",
                           str(config), "--home", str(tmp_path / "home")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "resolves outside" in done.stderr and "under the home's data/ folder" in done.stderr
    assert "Traceback" not in done.stderr and "╭" not in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["../evil", "a/b", "/etc", "x\\y", ".hidden", "A" * 80])
def test_config_name_cannot_be_a_path(tmp_path: Path, name: str) -> None:
    path = write_project(tmp_path, make_frame(50, 0), name="ok")
    raw = yaml.safe_load(path.read_text())
    raw["name"] = name
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="name"):
        load_config(path)


def test_policy_override_cannot_be_a_path(tmp_path: Path) -> None:
    cfg = load_config(write_project(tmp_path, make_frame(50, 0), name="ok"))
    with pytest.raises(ValueError):
        cfg.with_policy("../../evil")


@pytest.mark.parametrize("raw", ["../../etc/passwd", "..", ".", "", "a/../../b.csv",
                                 ".hidden.csv", "/abs/olute.csv"])
def test_quarantine_names_stay_in_the_quarantine_folder(raw: str) -> None:
    from tasks.ingest import _safe_name

    name = _safe_name(raw)
    assert "/" not in name and name not in ("", ".", "..") and not name.startswith(".")


def test_lock_names_cannot_escape(tmp_path: Path) -> None:
    from greenloop.locks import lock_path

    assert lock_path(tmp_path, "elec2-gated.update").parent == tmp_path / "locks"
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError):
            lock_path(tmp_path, bad)


@pytest.mark.parametrize("uri", ["sqlite:////etc/greenloop.db", "sqlite:///../../x.db",
                                 "file:///tmp/elsewhere", "file:../x"])
def test_configured_tracking_store_stays_in_the_project(tmp_path: Path, uri: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.runtime import Runtime

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    cfg = load_config(write_project(home, make_frame(50, 0), name="ok",
                                    overrides={"tracking": {"tracking_uri": uri}}))
    with pytest.raises(OutsideWorkspace):
        _ = Runtime(cfg, Workspace.from_env(home), "x").tracking_uri
    inside = load_config(write_project(home, make_frame(50, 0), name="ok", overrides={
        "tracking": {"tracking_uri": f"sqlite:///{home / 'state' / 'm.db'}"}}))
    assert Runtime(inside, Workspace.from_env(home), "x").tracking_uri.endswith("m.db")


@pytest.mark.parametrize("tracking", [{"experiment": "../../escape"},
                                      {"tracking_uri": "http://admin:hunter2@127.0.0.1:5000"}])
def test_tracking_config_has_no_paths_or_credentials(tmp_path: Path, tracking: dict) -> None:
    with pytest.raises(ConfigError):
        load_config(write_project(tmp_path, make_frame(50, 0), name="ok",
                                  overrides={"tracking": tracking}))


# --- The served Prefect API (issue 13): closed to whoever lacks the project's auth string,
# CSRF-protected, CORS limited to its own origin, never a foreign server, `home` confined.

class _Impostor(BaseHTTPRequestHandler):
    """Any local HTTP server that answers 200 to everything, health checks included."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    """A foreign server on a free port; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Prefect server started as `greenloop serve` starts it, for this module."""
    from greenloop_cli.servers import start_prefect_server, wait_healthy
    from tests.services import free_port

    state = tmp_path_factory.mktemp("served") / "state"
    with pytest.MonkeyPatch.context() as mp:  # its database in this test's folder
        mp.setenv("PREFECT_HOME", str(state / "prefect"))
        server = start_prefect_server(state, free_port())
    try:
        wait_healthy(server, timeout_s=180)
        yield server
    finally:
        server.stop()


def _call(url: str, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request, errors included."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - local URL
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _basic(auth: str) -> dict[str, str]:
    """The header Prefect's client sends for PREFECT_API_AUTH_STRING."""
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def _csrf(api: str, auth_headers: dict[str, str]) -> dict[str, str]:
    client = str(uuid.uuid4())
    code, _, body = _call(f"{api}/csrf-token?client={client}", headers=auth_headers)
    assert code == 200, body
    return {"Prefect-Csrf-Token": json.loads(body)["token"], "Prefect-Csrf-Client": client}


def test_served_api_refuses_requests_without_the_auth_string(served_prefect: Any,
                                                             tmp_path: Path) -> None:
    api = f"{served_prefect.url}/api"
    assert _call(f"{api}/health")[0] == 200  # health stays open (it is what we poll)
    assert _call(f"{api}/admin/version")[0] == 401
    assert _call(f"{api}/admin/version", headers=_basic("greenloop:guess"))[0] == 401
    assert _call(f"{api}/csrf-token?client=x")[0] == 401  # no CSRF token without it either
    code, _, _ = _call(f"{api}/deployments/filter", "POST", {"content-type": "application/json"},
                       b"{}")
    assert code in (401, 403)
    assert _call(f"{api}/admin/version", headers=_basic(served_prefect.auth))[0] == 200

    # greenloop's own client side: `worker`/`watch`/`deploy` read the auth string from the
    # home (PREFECT_API_AUTH_STRING unset) and write through Prefect's client (CSRF and all).
    home = Path(served_prefect.log_path).parents[2]  # <home>/state/logs/prefect-server.log
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_AUTH_STRING"}
    env.update(PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "client-prefect"))
    script = ("import asyncio, sys\nfrom pathlib import Path\n"
              "from greenloop_cli.servers import use_project_auth\n"
              "use_project_auth(Path(sys.argv[1]))\n"
              "from flows.deploy import ensure_limit\n"
              "asyncio.run(ensure_limit('greenloop-auth-check'))\n")
    out = subprocess.run([sys.executable, "-c", script, str(home)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    auth = _basic(served_prefect.auth)
    code, _, body = _call(f"{api}/v2/concurrency_limits/filter", "POST",
                          {"content-type": "application/json", **auth, **_csrf(api, auth)},
                          b"{}")
    assert code == 200 and "greenloop-auth-check" in {c["name"] for c in json.loads(body)}
    assert served_prefect.auth not in out.stdout + out.stderr


def test_served_api_refuses_changes_without_a_csrf_token(served_prefect: Any) -> None:
    api, json_body = f"{served_prefect.url}/api", {"content-type": "application/json"}
    code, _, body = _call(f"{api}/flows/filter", "POST", json_body, b"{}")
    assert code == 403 and b"CSRF" in body  # checked first: a web page cannot get one
    auth = {**json_body, **_basic(served_prefect.auth)}
    code, _, body = _call(f"{api}/flows/filter", "POST", auth, b"{}")
    assert code == 403 and b"CSRF" in body
    wrong = {"Prefect-Csrf-Token": "forged", "Prefect-Csrf-Client": str(uuid.uuid4())}
    assert _call(f"{api}/flows/filter", "POST", {**auth, **wrong}, b"{}")[0] == 403
    assert _call(f"{api}/flows/filter", "POST", {**auth, **_csrf(api, auth)}, b"{}")[0] == 200


def test_served_api_allows_no_other_origin(served_prefect: Any) -> None:
    api, own = f"{served_prefect.url}/api", served_prefect.url
    _, headers, _ = _call(f"{api}/health", headers={"Origin": "http://evil.example"})
    assert headers.get("access-control-allow-origin") is None
    _, headers, _ = _call(f"{api}/health", headers={"Origin": own})
    assert headers.get("access-control-allow-origin") == own  # the UI's own origin works
    code, headers, _ = _call(f"{api}/deployments/filter", "OPTIONS", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert code >= 400
    assert headers.get("access-control-allow-origin") not in ("*", "http://evil.example")


def test_served_auth_string_is_private_and_never_logged(served_prefect: Any) -> None:
    from greenloop_cli.servers import auth_path

    home_state = Path(served_prefect.log_path).parents[1]
    path = auth_path(home_state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == served_prefect.auth
    assert served_prefect.auth.startswith("greenloop:") and len(served_prefect.auth) > 40
    assert served_prefect.auth not in repr(served_prefect)
    assert served_prefect.auth not in served_prefect.url
    assert served_prefect.auth not in Path(served_prefect.log_path).read_text(errors="replace")


def test_auth_string_is_made_once_per_home_and_refused_if_readable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from greenloop_cli.servers import (
        ServerError,
        auth_path,
        project_auth,
        read_auth,
        use_project_auth,
    )

    first = project_auth(tmp_path / "a" / "state")
    assert project_auth(tmp_path / "a" / "state") == first  # kept, not remade
    assert project_auth(tmp_path / "b" / "state") != first  # one per home
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    use_project_auth(tmp_path / "a")
    assert os.environ["PREFECT_API_AUTH_STRING"] == first
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "user:own")
    use_project_auth(tmp_path / "a")
    assert os.environ["PREFECT_API_AUTH_STRING"] == "user:own"  # the user's setting wins
    auth_path(tmp_path / "a" / "state").chmod(0o644)
    with pytest.raises(ServerError, match="readable by other users"):
        read_auth(tmp_path / "a" / "state")


def test_serve_refuses_a_foreign_server_on_its_port(tmp_path: Path, impostor: int) -> None:
    from tests.services import greenloop

    config = write_project(tmp_path, make_frame(50, 0), name="ok")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")}
    out = subprocess.run(greenloop("serve", "--config", str(config), "--home", str(tmp_path),
                                   "--port", str(impostor), "--no-watch"),
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert f"port {impostor}" in out.stderr and "--port" in out.stderr, out.stderr[-2000:]
    assert "PREFECT_API_URL" in out.stderr
    assert not (tmp_path / "state" / "logs" / "prefect-server.log").exists()  # none started


def test_wait_healthy_refuses_a_server_that_does_not_know_our_auth(impostor: int) -> None:
    """A server taking the port between the check and the spawn: healthy, but not ours."""
    from greenloop_cli.servers import Server, ServerError, wait_healthy

    url = f"http://127.0.0.1:{impostor}"
    server = Server("prefect server", url, f"{url}/api/health", None, auth="greenloop:x")
    with pytest.raises(ServerError, match="not the one started here"):
        wait_healthy(server, timeout_s=10)


def test_deployment_flows_refuse_a_foreign_home_or_config(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.confine import SERVED_HOME_ENV, OutsideServedHome, confine
    from flows.deploy import full_retrain_model, update_model
    from flows.update import ingest

    served, foreign = tmp_path / "served", tmp_path / "foreign"
    config = write_project(served, make_frame(50, 0), name="ok")
    foreign_config = write_project(foreign, make_frame(50, 0), name="ok")
    monkeypatch.setenv(SERVED_HOME_ENV, str(served))  # as `greenloop serve` sets it
    calls = [lambda: update_model.fn(str(config), None, str(foreign)),
             lambda: full_retrain_model.fn(str(config), None, str(foreign)),
             lambda: ingest.fn("data/landing/ok/x.csv", str(config), None, str(foreign))]
    for call in calls:
        with pytest.raises(OutsideServedHome, match="parameter home="):
            call()
    assert not (foreign / "state").exists()  # nothing touched the foreign home
    with pytest.raises(OutsideServedHome, match="parameter config="):
        update_model.fn(str(foreign_config), None, str(served))
    link = served / "configs" / "link.yaml"  # inside configs/, pointing outside
    link.symlink_to(foreign_config)
    with pytest.raises(OutsideServedHome, match="parameter config="):
        confine(str(link), str(served))
    confine(str(config), str(served))  # the registered values pass
    confine(str(ROOT / "configs" / "elec2.yaml"), str(served))  # and the checkout's configs
    monkeypatch.delenv(SERVED_HOME_ENV)
    confine(str(foreign_config), str(foreign))  # a direct call (CLI, tests): not a deployment
