"""Drift reports on demand: the pipeline renders no HTML by default, records each checked
batch's reference window, and `greenloop report --seq N` draws that check later from the
versioned batches, onto the batch's MLflow run, billed to the batch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows import call_flow
from flows.replay import replay
from greenloop.ledger import Ledger
from tasks.report import ReportUnavailable, render_batch_report
from tasks.runtime import get_runtime
from tests.conftest import drifting_stream, write_project

pytestmark = pytest.mark.integration


def test_no_html_in_the_pipeline_then_a_report_on_demand(prefect_harness, home: Path) -> None:
    config = write_project(home, drifting_stream(), overrides={"drift": {"report": "never"}})
    call_flow(replay, str(config), None, None, False, str(home))
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ledger = Ledger(home / "state" / "ledger.sqlite")
    rows = ledger.query("SELECT seq, hash, role, reference_seqs, mlflow_run_id, decision "
                        "FROM batches WHERE model='synth-gated' ORDER BY seq")
    assert not any(a.path.endswith(".html") for r in rows
                   for a in client.list_artifacts(r["mlflow_run_id"]))

    checked = [r for r in rows if r["reference_seqs"]]
    assert [r["role"] for r in rows if not r["reference_seqs"]] == ["bootstrap", "bootstrap"]
    for r in checked:  # the reference is earlier batches, at most `reference_batches` (2)
        seqs = json.loads(r["reference_seqs"])
        assert 1 <= len(seqs) <= 2 and all(s < r["seq"] for s in seqs)

    target = next(r for r in checked if r["decision"] == "retrain")
    tag = client.get_run(target["mlflow_run_id"]).data.tags["drift_report"]
    assert tag == f"greenloop report --config {config} --seq {target['seq']}"
    drift_cpu_before = _drift_cpu(ledger, target["hash"])
    path = render_batch_report(get_runtime(str(config), None, str(home)), target["seq"])
    assert path.name == f"drift-{target['seq']:05d}.html"
    html = path.read_text()
    assert "<html" in html.lower() and "x0" in html  # Evidently's report on the features
    assert path.name in [a.path for a in client.list_artifacts(target["mlflow_run_id"])]
    assert _drift_cpu(ledger, target["hash"]) > drift_cpu_before  # billed to its batch

    with pytest.raises(ReportUnavailable, match="no drift check on record"):
        render_batch_report(get_runtime(str(config), None, str(home)), 1)
    latest = render_batch_report(get_runtime(str(config), None, str(home)))  # no seq
    assert latest.name == f"drift-{checked[-1]['seq']:05d}.html" and latest.is_file()


def test_report_command_names_what_is_missing(prefect_harness, home: Path) -> None:
    config = write_project(home, drifting_stream(), overrides={"drift": {"report": "never"}})
    call_flow(replay, str(config), None, 2, False, str(home))  # bootstrap only
    from greenloop_cli.main import app

    logging.getLogger("dvc").handlers.clear()  # see tests/reliability/conftest.py `cli`
    for seq, reason in ((1, "no drift check on record"), (99, "has no batch 99"),
                        (None, "no batch of synth-gated has a drift check on record")):
        args = [] if seq is None else ["--seq", str(seq)]
        result = CliRunner().invoke(app, ["report", "--config", str(config), "--home",
                                          str(home), *args])
        assert result.exit_code == 2 and reason in result.output, result.output


def _drift_cpu(ledger: Ledger, digest: str) -> float:
    rows = ledger.query("SELECT SUM(cpu_seconds) AS s FROM energy WHERE hash=? AND phase='drift'",
                        (digest,))
    return float(rows[0]["s"] or 0.0)
