"""The project's dvc.yaml driven by real DVC: configs as params, stages per dataset, experiments.

The end-to-end test copies dvc.yaml verbatim into a fresh git+DVC repository with one tiny
dataset (a cut of Elec2: 5 batches of 48 rows), so it checks the stages users run, not a
look-alike. DVC allows one command per repository at a time: every call here is sequential.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from greenloop.config import load_config

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's `dvc` and `greenloop`
CODE_DEPS = ("greenloop", "tasks", "flows", "greenloop_cli")  # the stages' code deps
DATASET = "tiny"
CONFIG = f"configs/{DATASET}.yaml"
SOURCE = f"data/sources/{DATASET}/{DATASET}.csv"
BATCH_ROWS, BATCHES = 48, 5
TINY_CONFIG = f"""\
name: {DATASET}
data:
  path: {SOURCE}
  target: class
  task: classification
  drop: [date]
  batch_rows: {BATCH_ROWS}
  bootstrap_batches: 2
model:
  hidden: [8]
  seed: 0
train:
  retrain: {{epochs: 2, batch_size: 64, lr: 0.001}}
  finetune: {{epochs: 1, batch_size: 64, lr: 0.001}}
drift:
  reference_batches: 2
  report: never
policy:
  name: gated
  retrain_quality_drop: 0.15
energy:
  country_iso_code: AUS
"""
THRESHOLD = "policy.retrain_quality_drop"


def _project_params() -> dict[str, Any]:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def test_every_dataset_entry_names_its_config_and_that_configs_source() -> None:
    """DVC cannot read a config's data.path, so params.yaml repeats it: keep them equal."""
    datasets = _project_params()["datasets"]
    assert datasets, "params.yaml lists no datasets"
    for key, entry in datasets.items():
        cfg = load_config(PROJECT / entry["config"])
        assert cfg.name == key, f"{entry['config']}: name {cfg.name!r} != params key {key!r}"
        assert Path(entry["source"]) == Path(cfg.data.path), f"{key}: source != data.path"
        assert (PROJECT / entry["source"]).is_file(), f"{key}: {entry['source']} missing"


def test_no_stage_is_hard_wired_to_a_dataset() -> None:
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    for name in ("prepare", "bootstrap", "run", "compare"):
        assert stages[name]["foreach"] == "${datasets}", name
    for key in _project_params()["datasets"]:
        assert key not in json.dumps(stages), f"dvc.yaml stages name the dataset {key!r}"


def _env() -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_TERMINAL_PROMPT="0")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the stages call `greenloop`
    return env


def _sh(repo: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=repo, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, (f"{' '.join(cmd)} failed:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _dvc(repo: Path, *args: str) -> str:
    return _sh(repo, str(BIN / "dvc"), *args)


def _make_repo(repo: Path) -> None:
    """A git+DVC repository with the project's dvc.yaml and one tiny dataset."""
    shutil.copy(PROJECT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(PROJECT / ".dvcignore", repo / ".dvcignore")
    params = _project_params()
    params["datasets"] = {DATASET: {"config": CONFIG, "source": SOURCE}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "configs").mkdir()
    (repo / CONFIG).write_text(TINY_CONFIG)
    lines = (PROJECT / "data/sources/elec2/electricity.csv").read_text().splitlines()
    (repo / SOURCE).parent.mkdir(parents=True)
    (repo / SOURCE).write_text("\n".join(lines[: 1 + BATCH_ROWS * BATCHES]) + "\n")
    for folder in CODE_DEPS:  # hashed by DVC as deps; the installed package runs
        shutil.copytree(PROJECT / folder, repo / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(PROJECT / ".gitignore", repo / ".gitignore")
    _sh(repo, "git", "init", "-q", "-b", "main")
    _sh(repo, "git", "config", "user.email", "test@example.invalid")
    _sh(repo, "git", "config", "user.name", "test")
    _dvc(repo, "init", "-q")
    _dvc(repo, "config", "core.analytics", "false")
    _dvc(repo, "config", "core.check_update", "false")
    _sh(repo, "git", "add", ".")
    _sh(repo, "git", "commit", "-q", "-m", "tiny project")


def _changed_stages(repo: Path) -> set[str]:
    return set(json.loads(_dvc(repo, "status", "--json")))


def _edited(repo: Path, old: str, new: str) -> set[str]:
    """The stages `dvc status` reports after one config edit (the edit is then undone)."""
    path = repo / CONFIG
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    try:
        return _changed_stages(repo)
    finally:
        path.write_text(text)


def _summary_of(node: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """(summary metrics, the threshold) of one `dvc exp show --json` row."""
    data = node["data"]
    summary = data["metrics"][f"reports/{DATASET}-gated/summary.json"]["data"]
    policy = data["params"][CONFIG]["data"]["policy"]
    return summary, policy["retrain_quality_drop"]


@pytest.mark.integration
def test_config_edits_rerun_their_stages_and_exp_run_records_a_variant(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    _make_repo(repo)
    pipeline = {f"{s}@{DATASET}" for s in ("prepare", "bootstrap", "run")}

    _dvc(repo, "repro", f"run@{DATASET}")
    summary = json.loads((repo / f"reports/{DATASET}-gated/summary.json").read_text())
    assert summary["batches"] == BATCHES
    assert not _changed_stages(repo) & pipeline  # all up to date
    _sh(repo, "git", "add", "dvc.lock")
    _sh(repo, "git", "commit", "-q", "-m", "baseline")

    # A threshold is read by bootstrap and run, not by the cut of the stream.
    changed = _edited(repo, "retrain_quality_drop: 0.15", "retrain_quality_drop: 0.05")
    assert changed & pipeline == {f"bootstrap@{DATASET}", f"run@{DATASET}"}
    # Control: the batch size is read by prepare too.
    changed = _edited(repo, f"batch_rows: {BATCH_ROWS}", f"batch_rows: {BATCH_ROWS // 2}")
    assert f"prepare@{DATASET}" in changed
    assert not _changed_stages(repo) & pipeline  # the edits were undone

    _dvc(repo, "exp", "run", "-S", f"{CONFIG}:{THRESHOLD}=0.05", f"run@{DATASET}")
    rows = json.loads(_dvc(repo, "exp", "show", "--json"))
    baseline = next(r for r in rows if r["name"] == "main")
    base_summary, base_threshold = _summary_of(baseline)
    assert base_threshold == 0.15
    experiments = [run for exp in baseline["experiments"] for run in exp["revs"]]
    assert len(experiments) == 1
    exp_summary, exp_threshold = _summary_of(experiments[0])
    assert exp_threshold == 0.05
    for s in (base_summary, exp_summary):
        assert 0.0 <= s["prequential"] <= 1.0
        assert s["energy_kwh"]["total"] > 0.0
        assert s["batches"] == BATCHES
    assert not _changed_stages(repo) & pipeline  # the variant's results are in the workspace
