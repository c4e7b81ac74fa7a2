"""The served deployments: names, triggers, schedules, fixed parameters (no server)."""

from __future__ import annotations

from pathlib import Path

import yaml

from greenloop_cli.servers import LOCALHOST, mlflow_ui_command

REPO = Path(__file__).resolve().parents[2]


def test_four_deployments_with_triggers_and_schedules(tmp_path: Path) -> None:
    from flows.deploy import deployments

    raw = yaml.safe_load((REPO / "configs" / "elec2.yaml").read_text())
    raw["schedule"] = {"update_cron": "*/30 * * * *", "full_retrain_cron": "0 2 * * *"}
    config = tmp_path / "elec2.yaml"
    config.write_text(yaml.safe_dump(raw))
    deps = {d.name: d for d in deployments(config, home=tmp_path)}
    assert set(deps) == {"ingest-elec2", "update-elec2", "scheduled-update-elec2",
                         "full-retrain-elec2"}

    ingest = deps["ingest-elec2"]
    (trigger,) = ingest.triggers
    assert trigger.expect == {"greenloop.batch.arrived"}
    assert trigger.match.model_dump()["greenloop.dataset"] == "elec2"
    assert trigger.parameters == {"path": "{{ event.payload.path }}"}

    (accepted,) = deps["update-elec2"].triggers
    assert accepted.expect == {"greenloop.batch.accepted"}
    assert accepted.match.model_dump()["greenloop.model"] == "elec2-gated"

    (cron,) = deps["scheduled-update-elec2"].schedules
    assert cron.schedule.cron == "*/30 * * * *" and cron.active
    (retrain,) = deps["full-retrain-elec2"].schedules
    assert retrain.schedule.cron == "0 2 * * *" and retrain.active is False  # off by default

    for d in deps.values():
        assert d.parameters["config"] == str(config.resolve())
        assert d.parameters["home"] == str(tmp_path.resolve())
        assert d.entrypoint.startswith("flows.")  # importable from any working folder


def test_mlflow_ui_is_lean_and_local(tmp_path: Path) -> None:
    cmd = mlflow_ui_command("sqlite:///x.db", tmp_path, 5001)
    assert cmd[cmd.index("--host") + 1] == LOCALHOST == "127.0.0.1"
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--default-artifact-root") + 1] == tmp_path.resolve().as_uri()
