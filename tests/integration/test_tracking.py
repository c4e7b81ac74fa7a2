"""The MLflow edge against a real local store: versions, their source, the alias."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.tracking import RegisteredModelMissing, Tracker


def _version(tracker: Tracker, model: str, tmp: Path, n: int) -> int:
    run_id = tracker.log_run(f"b{n}", {"n": n}, {"rows": 10.0}, {"policy": "gated"})
    files = tmp / f"model-{n}"
    files.mkdir()
    (files / "state_dict.pt").write_bytes(b"weights")
    return tracker.register(model, run_id, files, {"decision": "finetune"})


def test_versions_point_at_their_run_artifacts(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    first, second = (_version(tracker, "m", tmp_path, n) for n in (1, 2))
    assert (first, second) == (1, 2)
    mv = tracker.client.get_model_version("m", "2")
    run = tracker.client.get_run(mv.run_id)
    assert mv.source == f"{run.info.artifact_uri}/model"
    assert mv.tags["decision"] == "finetune"
    tracker.set_champion("m", second)
    assert tracker.champion("m") == 2


def test_a_registered_model_deleted_meanwhile_is_created_again(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    _version(tracker, "m", tmp_path, 1)
    tracker.client.delete_registered_model("m")  # e.g. from the MLflow UI
    assert _version(tracker, "m", tmp_path, 2) == 1  # a new registered model, version 1
    assert tracker.client.get_registered_model("m").name == "m"


@pytest.fixture(params=["sqlite", "server"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQL store in-process, and a real `mlflow server` over REST: the two tell a
    deleted registered model from a missing alias by the error code they return."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mlflow.db'}"
        return
    from tests.reliability.test_outage import MlflowServer, free_port

    folder = tmp_path / "server"
    folder.mkdir()
    server = MlflowServer(folder, free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def test_registry_champion_reads_mlflow_and_tells_a_deleted_model_from_no_alias(
        tmp_path: Path, store_uri: str) -> None:
    tracker = Tracker(store_uri, "exp", tmp_path / "artifacts")
    version = _version(tracker, "m", tmp_path, 1)
    assert tracker.registry_champion("m") is None  # registered, no alias yet
    tracker.set_champion("m", version)
    assert tracker.registry_champion("m") == version
    tracker.client.delete_registered_model("m")
    assert tracker.known_champion("m") == version  # memory alone would not notice
    with pytest.raises(RegisteredModelMissing):
        tracker.registry_champion("m")


def _pragma(engine: object, name: str) -> object:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_the_mlflow_sqlite_file_is_journaled_as_the_ledger_is(tmp_path: Path) -> None:
    """WAL and synchronous=NORMAL on MLflow's own connections, for the tracking and the
    registry store alike; another SQLite database in the process keeps SQLite's defaults."""
    import sqlite3

    from sqlalchemy import create_engine

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "artifacts")
    _version(tracker, "m", tmp_path, 1)
    stores = (tracker.client._tracking_client.store, tracker.client._get_registry_client().store)
    for store in stores:
        assert _pragma(store.engine, "journal_mode") == "wal"
        assert _pragma(store.engine, "synchronous") == 1  # NORMAL; SQLite's default is FULL (2)
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:  # the mode is stored in the file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    assert _pragma(other, "journal_mode") == "delete"
    assert _pragma(other, "synchronous") == 2
