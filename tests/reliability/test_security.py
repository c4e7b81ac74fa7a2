"""Nobody in: local-only servers, weights never unpickled, no secrets in configs, and no
config value or file name that reads or writes outside the data and state folders."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

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
