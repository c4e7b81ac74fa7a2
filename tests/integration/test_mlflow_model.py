"""Model versions as MLflow pyfunc models, `greenloop predict`, and runs that compare
(dataset inputs, a parent run per replay), against a real sqlite MLflow store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from greenloop.config import ModelConfig
from greenloop.data import Schema
from greenloop.ledger import Ledger
from greenloop.model import TabularModel
from tasks.mlmodel import ScoringError, load_version, score, write_mlmodel
from tasks.parent_run import config_hash
from tasks.tracking import PARENT_TAG, DatasetRef, Tracker
from tests.conftest import make_frame, write_project

pytestmark = pytest.mark.integration

MODEL = "synth-gated"  # what `write_project`'s config names its gated model
EXPERIMENT = "greenloop-synth"


def _frame(rows: int, seed: int) -> pd.DataFrame:
    """Float features, an integer feature (int64: MLflow refuses to cast it to double)
    and an integer-coded categorical one, as real streams have them."""
    frame = make_frame(rows, seed=seed, n_features=3)
    rng = np.random.default_rng(seed)
    frame["count"] = rng.integers(0, 50, rows)
    frame["day"] = rng.integers(1, 8, rows)
    return frame


def _model(frame: pd.DataFrame) -> TabularModel:
    schema = Schema("y", ("x0", "x1", "x2", "count"), ("day",), ())
    return TabularModel.create(frame, schema, "classification", ModelConfig(hidden=[8]), seed=0)


@dataclass
class Store:
    home: Path
    tracker: Tracker
    model: TabularModel
    frame: pd.DataFrame
    run_id: str
    parent_id: str
    version: int

    @property
    def uri(self) -> str:
        return self.tracker.uri


@pytest.fixture
def store(home: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """One batch run nested under a parent, with its dataset and a champion version,
    laid out as a project home would have them (mlflow.db, mlartifacts/)."""
    monkeypatch.chdir(home)  # anything MLflow writes by default lands here, not in the repo
    uri = f"sqlite:///{home / 'mlflow.db'}"
    tracker = Tracker(uri, EXPERIMENT, home / "mlartifacts")
    frame = _frame(120, seed=1)
    model = _model(frame)
    parent = tracker.start_parent(f"{MODEL} replay", {"policy": "gated"})
    data = DatasetRef(name="synth-b00001", digest="0" * 31 + "1", source=str(home / "b1.parquet"),
                      context="training", rows=len(frame))
    run_id = tracker.log_run("b1", {"policy": "gated"}, {"rows": float(len(frame))},
                             {"policy": "gated"}, datasets=[data], parent_run_id=parent)
    folder = home / "staging"
    model.save(folder)
    write_mlmodel(folder, model, frame)
    version = tracker.register(MODEL, run_id, folder, {"decision": "retrain"})
    tracker.set_champion(MODEL, version)
    tracker.finish_parent(parent, {"prequential_accuracy": 0.75, "decisions.retrain": 1},
                          {"energy_method": "test"})
    return Store(home, tracker, model, frame, run_id, parent, version)


def test_the_champion_loads_offline_and_predicts_one_per_row(store: Store) -> None:
    mlflow.set_tracking_uri(store.uri)
    mlflow.set_registry_uri(store.uri)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        # MLflow 3.17 keeps MLFLOW_REGISTRY_URI in the environment after
        # set_registry_uri(None): a later client in this process would read this store.
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    batch = _frame(37, seed=2)
    out = np.asarray(loaded.predict(batch))
    assert out.shape == (37,)
    assert (out == store.model.predict(batch)).all()
    schema = loaded.metadata.get_input_schema()
    assert schema.input_names() == ["x0", "x1", "x2", "count", "day"]
    assert loaded.metadata.saved_input_example_info["type"] == "dataframe"


def test_each_version_pins_its_requirements_and_keeps_warm_start_files(store: Store) -> None:
    files = {a.path for a in store.tracker.client.list_artifacts(store.run_id, "model")}
    for name in ("MLmodel", "python_model.py", "requirements.txt", "python_env.yaml",
                 "input_example.json", "state_dict.pt", "model.json"):
        assert f"model/{name}" in files, name
    local = mlflow.artifacts.download_artifacts(
        run_id=store.run_id, artifact_path="model/requirements.txt", tracking_uri=store.uri)
    pins = Path(local).read_text().split()
    assert all("==" in p for p in pins) and any(p.startswith("torch==") for p in pins)
    warm = store.tracker.fetch_model(MODEL, store.version, store.home / "cache")
    batch = _frame(20, seed=3)
    assert (warm.predict(batch) == store.model.predict(batch)).all()


def test_a_batch_run_declares_its_dataset_and_its_parent(store: Store) -> None:
    run = store.tracker.client.get_run(store.run_id)
    (declared,) = run.inputs.dataset_inputs
    assert declared.dataset.digest == "0" * 31 + "1"
    assert json.loads(declared.dataset.source)["uri"].endswith("b1.parquet")
    assert {t.key: t.value for t in declared.tags}["mlflow.data.context"] == "training"
    assert run.data.tags[PARENT_TAG] == store.parent_id
    parent = store.tracker.client.get_run(store.parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["prequential_accuracy"] == 0.75
    assert parent.data.tags["energy_method"] == "test"
    assert PARENT_TAG not in parent.data.tags


def test_score_names_missing_columns_and_converts_exact_integers(store: Store) -> None:
    loaded = load_version(store.uri, MODEL)
    # No process-wide URI left behind: later Runtimes read MLFLOW_TRACKING_URI first.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    batch = _frame(10, seed=4)
    with pytest.raises(ScoringError, match="count, day"):
        score(loaded, batch.drop(columns=["count", "day"]))
    as_floats = batch.astype({"count": float})  # e.g. a CSV column read with a NaN elsewhere
    assert (score(loaded, as_floats).to_numpy() == store.model.predict(batch)).all()
    with pytest.raises(ScoringError, match="no version 9"):
        load_version(store.uri, MODEL, 9)
    with pytest.raises(ScoringError, match="no champion yet"):
        load_version(store.uri, "nothing-here")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(store: Store) -> Iterator[str]:
    """`mlflow models serve` on the champion, in its own process group; killed after."""
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    # The server execs `uvicorn` by name: the venv's bin must be on PATH (as when activated).
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "MLFLOW_REGISTRY_URI": store.uri,
           "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = store.home / "serve.log"  # a file, not a pipe: a full pipe would block the server
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(mlflow_cli), "models", "serve", "-m", f"models:/{MODEL}@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
            cwd=store.home, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow models serve did not answer /ping within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (uvicorn workers included), then KILL."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the whole group is already gone
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.poll()  # reap it


def test_the_served_champion_scores_rows_over_http(store: Store, served: str) -> None:
    batch = _frame(25, seed=5)
    body = json.dumps({"dataframe_split": json.loads(batch.to_json(orient="split", index=False))})
    request = urllib.request.Request(f"{served}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        answer = json.loads(r.read())
    got = [p["prediction"] if isinstance(p, dict) else p for p in answer["predictions"]]
    assert got == store.model.predict(batch).tolist()


def _cli(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout, and both streams together (for messages)."""
    from greenloop_cli.main import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.output


def test_predict_writes_the_champions_predictions_beside_the_file(store: Store) -> None:
    config = write_project(store.home, _frame(400, seed=6))
    rows = _frame(30, seed=7)
    target = store.home / "incoming.csv"
    rows.to_csv(target, index=False)
    code, stdout, output = _cli("predict", "--config", str(config), "--home", str(store.home),
                                str(target))
    assert code == 0, output
    written = store.home / "incoming.predictions.csv"
    assert stdout.strip() == str(written)  # the path alone: scripts can read it
    scored = pd.read_csv(written)
    assert list(scored.columns) == [*rows.columns, "prediction"] and len(scored) == 30
    assert (scored["prediction"].to_numpy() == store.model.predict(rows)).all()

    code, _, output = _cli("predict", "--config", str(config), "--home", str(store.home),
                           "--version", "1", str(target))
    assert code == 0, output


def test_predict_fails_clearly(store: Store) -> None:
    config = write_project(store.home, _frame(400, seed=6))
    partial = store.home / "partial.csv"
    _frame(5, seed=8).drop(columns=["x2"]).to_csv(partial, index=False)
    base = ("predict", "--config", str(config), "--home", str(store.home))
    code, _, output = _cli(*base, str(partial))
    assert code == 2 and "x2" in output and "lacks" in output
    code, _, output = _cli(*base, str(store.home / "absent.csv"))
    assert code == 2 and "no such file" in output
    code, _, output = _cli(*base, "--policy", "periodic", str(partial))
    assert code == 2 and "no champion yet" in output
    assert not (store.home / "partial.predictions.csv").exists()


def test_a_replay_nests_its_batch_runs_under_one_parent_with_totals(
        prefect_harness, home: Path) -> None:
    from flows import call_flow
    from flows.replay import replay
    from tests.conftest import drifting_stream

    config = write_project(home, drifting_stream())
    summary = call_flow(replay, str(config), None, None, False, str(home))
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}", EXPERIMENT, home / "mlartifacts")
    runs = tracker.client.search_runs([tracker.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == f"{MODEL} replay"]
    batches = [r for r in runs if r is not parent]
    assert len(batches) == summary["batches"] == 6
    assert {r.data.tags[PARENT_TAG] for r in batches} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.tags["policy"] == "gated"
    assert parent.data.tags["config_hash"] == config_hash(config)
    assert parent.data.metrics["prequential_accuracy"] == pytest.approx(summary["prequential"])
    assert parent.data.metrics["energy_kwh.train"] > 0
    assert sum(parent.data.metrics[f"decisions.{d}"]
               for d in ("skip", "finetune", "retrain")) == 4  # 2 bootstrap batches do not count
    ledger = Ledger(home / "state" / "ledger.sqlite")
    md5s = {b.hash: b.dvc_md5 for b in ledger.batches(MODEL)}
    ledger.close()
    for run in batches:
        (declared,) = run.inputs.dataset_inputs
        assert declared.dataset.digest == md5s[run.data.tags["batch_hash"]]
        assert Path(json.loads(declared.dataset.source)["uri"]).is_file()
    # The version the replay registered through the pipeline loads through MLflow.
    loaded = load_version(tracker.uri, MODEL)
    assert len(score(loaded, drifting_stream().head(50))) == 50
