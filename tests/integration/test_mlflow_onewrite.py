"""A per-batch run written in one transaction reads back, through `MlflowClient`, exactly
as the same run written by the client's four calls: info, tags, params, metrics and their
history, dataset inputs (a dataset already in the experiment is shared, not duplicated),
search filters. A run MLflow would refuse is refused, and nothing of it is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from tasks.tracking import DatasetRef, Tracker

PARAMS = {"policy": "gated", "batch_seq": 7, "config": "x" * 7000}  # cut at 6000, as MLflow does
METRICS = {"accuracy_before": 0.75, "rows": 336.0, "drift_score.nswprice": 0.4,
           "energy_kwh": 5.4e-08, "not_finite": float("nan")}
TAGS = {"decision": "skip", "policy": "gated", "reason": "no drift"}
SCHEMA = '[{"type": "double", "name": "nswprice", "required": true}]'


def _datasets(digest: str) -> list[DatasetRef]:
    return [DatasetRef("batch-00007", digest, "/data/b7.parquet", "batch", 336, SCHEMA),
            DatasetRef("training", "f" * 32, "/data/train", "training", 1000)]


def _by_client(tracker: Tracker, name: str, parent: str) -> str:
    """The four-call path, as `log_run` writes to a tracking server over HTTP."""
    sql, tracker._sql = tracker._sql, None  # noqa: SLF001 - force the other path
    try:
        return tracker.log_run(name, PARAMS, METRICS, TAGS, datasets=_datasets("a" * 32),
                               parent_run_id=parent)
    finally:
        tracker._sql = sql  # noqa: SLF001


def _inputs(tracker: Tracker, run_id: str) -> list[tuple]:
    run = tracker.client.get_run(run_id)
    return sorted((i.dataset.name, i.dataset.digest, i.dataset.source, i.dataset.source_type,
                   i.dataset.schema, i.dataset.profile, tuple((t.key, t.value) for t in i.tags))
                  for i in run.inputs.dataset_inputs)


def check_one_write_matches_the_client(uri: str, artifacts: Path) -> None:
    tracker = Tracker(uri, "exp", artifacts)
    assert tracker._sql is not None  # noqa: SLF001 - a SQL store takes the one-write path
    parent = tracker.start_parent("replay", {"policy": "gated"})
    slow_id = _by_client(tracker, "m-b00007", parent)
    fast_id = tracker.log_run("m-b00007", PARAMS, METRICS, TAGS, datasets=_datasets("a" * 32),
                              parent_run_id=parent)
    slow, fast = tracker.client.get_run(slow_id), tracker.client.get_run(fast_id)

    for field in ("status", "lifecycle_stage", "run_name", "experiment_id", "user_id"):
        assert getattr(fast.info, field) == getattr(slow.info, field), field
    assert fast.info.status == "FINISHED"
    assert fast.info.artifact_uri == slow.info.artifact_uri.replace(slow_id, fast_id)
    assert fast.info.end_time >= fast.info.start_time > 0
    assert fast.data.params == slow.data.params
    assert len(fast.data.params["config"]) == 6000
    assert fast.data.metrics == slow.data.metrics and "not_finite" not in fast.data.metrics
    assert fast.data.tags == slow.data.tags
    assert fast.data.tags["mlflow.parentRunId"] == parent
    assert _inputs(tracker, fast_id) == _inputs(tracker, slow_id)
    history = tracker.client.get_metric_history(fast_id, "accuracy_before")
    assert [(m.value, m.step) for m in history] == [(0.75, 0)]

    # The same dataset (name, digest) is one row of the experiment, linked to both runs.
    store = tracker._sql  # noqa: SLF001
    from mlflow.store.tracking.dbmodels.models import SqlDataset

    with store.ManagedSessionMaker() as session:
        assert session.query(SqlDataset).filter(SqlDataset.name == "batch-00007").count() == 1

    found = tracker.client.search_runs(
        [tracker.experiment_id], "tags.decision = 'skip' and metrics.rows > 300 "
        f"and tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in found} == {slow_id, fast_id}

    # A metric name MLflow refuses: refused here too, and no part of the run is written.
    before = len(tracker.client.search_runs([tracker.experiment_id]))
    with pytest.raises(MlflowException, match="Names may only contain"):
        tracker.log_run("bad", PARAMS, {"drift_score.price (USD)": 1.0}, TAGS,
                        datasets=_datasets("b" * 32))
    assert len(tracker.client.search_runs([tracker.experiment_id])) == before


def _client_alias(tracker: Tracker, name: str) -> object:
    """What MLflow's own call answers: the version, 'no alias' or 'no such model'."""
    try:
        return int(tracker.client.get_model_version_by_alias(name, "champion").version)
    except MlflowException as e:
        return e.error_code


def _direct_alias(tracker: Tracker, name: str) -> object:
    from tasks.mlflow_onewrite import read_alias

    try:
        version = read_alias(tracker._registry_sql, name, "champion")  # noqa: SLF001
    except MlflowException as e:
        return e.error_code
    return "INVALID_PARAMETER_VALUE" if version is None else version


def check_alias_read_matches_the_client(uri: str, artifacts: Path) -> None:
    """The one-SELECT alias read answers as `get_model_version_by_alias` does through a
    model's life: no model, no alias, set, moved, its version deleted, the model deleted."""
    tracker = Tracker(uri, "exp", artifacts)
    assert tracker._registry_sql is not None  # noqa: SLF001 - a SQL registry
    client, seen = tracker.client, []

    def both() -> None:
        seen.append(_client_alias(tracker, "m"))
        assert _direct_alias(tracker, "m") == seen[-1], seen

    both()
    client.create_registered_model("m")
    both()
    for _ in range(3):
        client.create_model_version("m", source=str(artifacts / "x"))
    client.create_registered_model("other")
    client.create_model_version("other", source=str(artifacts / "y"))
    client.set_registered_model_alias("other", "champion", "1")  # another model's alias
    both()
    client.set_registered_model_alias("m", "champion", "2")
    both()
    client.set_registered_model_alias("m", "champion", "3")
    both()
    client.delete_model_version("m", "3")
    both()
    client.delete_registered_model("m")
    both()
    assert seen == ["RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE",
                    "INVALID_PARAMETER_VALUE", 2, 3, "INVALID_PARAMETER_VALUE",
                    "RESOURCE_DOES_NOT_EXIST"]


def test_the_alias_read_answers_as_the_client(tmp_path: Path) -> None:
    check_alias_read_matches_the_client(f"sqlite:///{tmp_path / 'mlflow.db'}",
                                        tmp_path / "artifacts")


def test_one_write_run_reads_back_as_the_clients_run(tmp_path: Path) -> None:
    check_one_write_matches_the_client(f"sqlite:///{tmp_path / 'mlflow.db'}",
                                       tmp_path / "artifacts")


def test_a_run_into_a_deleted_experiment_is_refused(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "artifacts")
    tracker.client.delete_experiment(tracker.experiment_id)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        tracker.log_run("b1", PARAMS, METRICS, TAGS)


def test_a_run_whose_last_insert_fails_leaves_nothing(tmp_path: Path) -> None:
    """The dataset input's tag is the last row written; a NULL there fails the insert
    after the run, its tags, params and metrics are in: the whole transaction is undone."""
    from sqlalchemy.exc import IntegrityError

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "artifacts")
    broken = DatasetRef("batch-00007", "b" * 32, "/data/b7.parquet", None, 336)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match="NOT NULL"):
        tracker.log_run("b1", PARAMS, METRICS, TAGS, datasets=[broken])
    assert tracker.client.search_runs([tracker.experiment_id]) == []
    ok = tracker.log_run("b2", PARAMS, METRICS, TAGS, datasets=_datasets("c" * 32))
    assert [r.info.run_id for r in tracker.client.search_runs([tracker.experiment_id])] == [ok]


@pytest.mark.parametrize("column", ["price (USD)", "µg/m³", "a//b", "a/./b", "x" * 300])
def test_any_column_name_makes_a_drift_score_mlflow_accepts(column: str) -> None:
    from mlflow.utils.validation import _validate_metric_name

    from tasks.registry import score_key

    _validate_metric_name(score_key(column))  # raises for a name MLflow refuses
    assert score_key(column).startswith("drift_score.")


def test_sqlite_settings_are_made_once_per_connection_and_hold(tmp_path: Path) -> None:
    """MLflow's SQLite settings (foreign keys on, a busy timeout, case-sensitive LIKE) are
    set on a pooled connection the first time a run is written through it, and hold for
    every later run written through it."""
    from sqlalchemy import event

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "artifacts")
    engine = tracker._sql.engine  # noqa: SLF001
    pragmas: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: pragmas.append(sql) if "PRAGMA" in sql else None)
    for n in range(4):
        tracker.log_run(f"b{n}", PARAMS, METRICS, TAGS, datasets=_datasets("d" * 32))
    made = list(pragmas)
    with engine.connect() as conn:  # the pool hands back the connection the runs used
        settings = [conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                    for p in ("foreign_keys", "busy_timeout")]
    assert settings == [1, 20000]
    assert len(made) == 3 * engine.pool.checkedin() < 3 * 4  # once per pooled connection
    assert len(tracker.client.search_runs([tracker.experiment_id])) == 4
