"""`update` under a real (temporary) Prefect API, MLflow on sqlite in a temp folder,
real DVC: registry versions, tags, the champion alias and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from flows import call_flow
from flows.replay import replay
from flows.update import update
from greenloop.data import BatchRejected
from greenloop.ledger import Ledger
from tests.conftest import drifting_stream, make_frame, write_project

pytestmark = pytest.mark.integration


def test_replay_registers_versions_tags_alias_and_summary(prefect_harness, home: Path) -> None:
    config = write_project(home, drifting_stream())
    summary = call_flow(replay, str(config), None, None, False, str(home))

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    versions = client.search_model_versions("name='synth-gated'")
    decisions = {int(v.version): v.tags["decision"] for v in versions}
    assert decisions[1] == "retrain" and "bootstrap" in client.get_model_version(
        "synth-gated", "1").tags["reason"]
    assert "retrain" in list(decisions.values())[1:] or "retrain" in \
        [d for v, d in decisions.items() if v > 1]
    for v in versions:
        for tag in ("decision", "reason", "parent_version", "data_md5", "energy_kwh",
                    "emissions_kg", "cpu_seconds", "lineage_energy_kwh"):
            assert tag in v.tags, tag
        assert float(v.tags["energy_kwh"]) > 0 and len(v.tags["data_md5"]) == 32
    champion = client.get_model_version_by_alias("synth-gated", "champion")
    assert int(champion.version) == summary["mlflow"]["champion_version"]

    exp = client.get_experiment_by_name("greenloop-synth")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if "mlflow.parentRunId" in r.data.tags]  # the batch runs, under the replay's run
    assert len(runs) == 6
    assert all(r.data.tags["policy"] == "gated" for r in runs)
    acted = [r for r in runs if r.data.tags["decision"] == "retrain"
             and r.data.tags["batch_seq"] != "2"]
    assert acted and "drift_share" in acted[0].data.metrics
    # the training work done, beside its energy: rows × the epochs early stopping ran
    assert acted[0].data.metrics["train_row_epochs"] >= acted[0].data.metrics["train_rows"] > 0
    skipped = [r for r in runs if r.data.tags["decision"] == "skip"]
    assert skipped and skipped[0].data.metrics["train_row_epochs"] == 0
    assert any(a.path.endswith(".html") for a in client.list_artifacts(acted[0].info.run_id))

    on_disk = json.loads((home / "reports" / "synth-gated" / "summary.json").read_text())
    assert on_disk["batches"] == 6 and on_disk["metric"] == "accuracy"
    assert sum(on_disk["decisions"].values()) == 4  # 2 bootstrap batches do not count
    assert on_disk["decisions"]["skip"] >= 1 and on_disk["decisions"]["retrain"] >= 1
    assert 0 < on_disk["energy_kwh"]["train"] < on_disk["energy_kwh"]["total"]
    assert on_disk["cpu_seconds"]["total"] > 0 and on_disk["energy_method"].startswith("CodeCarbon")
    assert 0.5 < on_disk["prequential"] <= 1.0


def test_bad_batch_is_quarantined_and_champion_untouched(prefect_harness, home: Path) -> None:
    stream = pd.concat([make_frame(200, seed=s) for s in range(3)], ignore_index=True)
    config = write_project(home, stream)
    call_flow(replay, str(config), None, None, False, str(home))
    ledger = Ledger(home / "state" / "ledger.sqlite")
    champion = ledger.champion("synth-gated")
    landing = home / "data" / "landing" / "synth"
    landing.mkdir(parents=True)
    bad = make_frame(50, seed=99).drop(columns="x2")
    bad.to_csv(landing / "bad.csv", index=False)
    with pytest.raises(BatchRejected, match="missing column.*x2"):
        call_flow(update, str(config), path=str(landing / "bad.csv"), home=str(home))
    assert not (landing / "bad.csv").exists()
    quarantined = home / "data" / "quarantine" / "synth"
    assert (quarantined / "bad.csv").exists()
    assert "x2" in (quarantined / "bad.csv.reason.txt").read_text()
    assert ledger.champion("synth-gated") == champion
    # The same good file twice: processed once.
    good = make_frame(200, seed=123)
    good.to_csv(landing / "good.csv", index=False)
    first = call_flow(update, str(config), path=str(landing / "good.csv"), home=str(home))
    again = call_flow(update, str(config), path=str(landing / "good.csv"), home=str(home))
    assert len(first) == 1 and again == []


def test_a_skip_makes_only_the_batches_it_reads_however_long_the_history(
        prefect_harness, home: Path, monkeypatch) -> None:
    """A served model's ledger grows by a batch an arrival. With 2,000 more processed
    batches behind it, a skip still makes (tasks/runtime.py: Runtime.batch) only the
    batches it reads, not one per batch ever accepted: a structural check of what the
    nineteenth session measured (docs/benchmarks.md), not a timing."""
    from tasks.runtime import Runtime

    stream = pd.concat([make_frame(200, seed=s) for s in range(4)], ignore_index=True)
    config = write_project(home, stream)
    call_flow(replay, str(config), "never", None, False, str(home))
    ledger = Ledger(home / "state" / "ledger.sqlite")
    last = ledger.batches("synth-never", ("processed",))[-1]
    for k in range(2000):  # copies of the last batch under new hashes, as if served
        digest = f"pad{k:061d}"
        ledger.receive("synth-never", digest, "padding")
        ledger.update_batch("synth-never", digest, status="accepted", rows=last.rows,
                            accepted_path=last.accepted_path, dvc_md5=last.dvc_md5)
        ledger.complete_batch("synth-never", digest, {"role": "update", "decision": "skip"})
    made: list[int] = []
    original = Runtime.batch

    def counted(self, digest, seq, accepted_path, md5=None):  # noqa: ANN001, ANN202
        made.append(seq)
        return original(self, digest, seq, accepted_path, md5)

    monkeypatch.setattr(Runtime, "batch", counted)
    landing = home / "data" / "landing" / "synth"
    landing.mkdir(parents=True)
    make_frame(200, seed=77).to_csv(landing / "new.csv", index=False)
    out = call_flow(update, str(config), path=str(landing / "new.csv"), policy="never",
                    home=str(home))
    assert [r["decision"] for r in out] == ["skip"]
    assert len(made) < 50, f"{len(made)} batches made for one skip"
