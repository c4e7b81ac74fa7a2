"""A finished per-batch MLflow run written in one database transaction; the champion
alias read in one statement.

`MlflowClient` writes a run in four transactions (create, log_batch, log_inputs,
set_terminated), each re-reading the experiment or the run it just wrote: 20 ms of CPU
per run here against 3.9 ms in one transaction (200 runs of 22 metrics, 7 params, 12
tags and a dataset each, SQLite in WAL mode, 6 Dec). That was about a quarter of what a
skipped batch costs, paid by every policy on every batch. Against a
SQLAlchemy store (SQLite, PostgreSQL) the same rows are inserted here with one commit:
the run as FINISHED, its tags, params, metrics (history and latest value) and dataset
inputs, exactly as MLflow's store would write them (tests/integration/test_mlflow_onewrite.py
reads both back through `MlflowClient` and compares them field by field).

Before every batch the champion alias is read fresh (tasks/registry.py: reconcile).
`MlflowClient.get_model_version_by_alias` opens an ORM session, loads the registered
model, the alias, the version and all the version's aliases: 2.8 ms of CPU against
0.06 ms for the one `SELECT` the answer needs (SQLite, 6 Dec). `read_alias` answers the
same question with MLflow's error for a registered model that does not exist.

It uses the ORM tables of the pinned MLflow (pyproject.toml). Any other store (an
`http://` tracking server) goes through `MlflowClient` as before. Nothing is half
written: the transaction commits whole or not at all.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mlflow.entities import (
    DatasetInput,
    LifecycleStage,
    Metric,
    Param,
    RunStatus,
    RunTag,
    SourceType,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.db.db_types import SQLITE
from mlflow.store.model_registry.dbmodels.models import (
    SqlRegisteredModel,
    SqlRegisteredModelAlias,
)
from mlflow.store.model_registry.sqlalchemy_store import (
    SqlAlchemyStore as RegistrySqlStore,
)
from mlflow.store.tracking.dbmodels.models import (
    SqlDataset,
    SqlExperiment,
    SqlInput,
    SqlInputTag,
    SqlLatestMetric,
    SqlMetric,
    SqlParam,
    SqlRun,
    SqlTag,
)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import _validate_batch_log_data, _validate_batch_log_limits
from sqlalchemy import Connection, bindparam, insert, select

# Statements built once: building a SELECT and its cache key again for every batch was
# ~1 ms of a served skip's CPU (py-spy, 7 Dec); SQLAlchemy compiles each once per dialect.
_ALIAS_VERSION = select(SqlRegisteredModelAlias.version).where(
    SqlRegisteredModelAlias.workspace == bindparam("workspace"),
    SqlRegisteredModelAlias.name == bindparam("name"),
    SqlRegisteredModelAlias.alias == bindparam("alias"))
_REGISTERED = select(SqlRegisteredModel.name).where(
    SqlRegisteredModel.workspace == bindparam("workspace"),
    SqlRegisteredModel.name == bindparam("name"))
_EXPERIMENT = select(SqlExperiment.lifecycle_stage, SqlExperiment.artifact_location).where(
    SqlExperiment.experiment_id == bindparam("experiment_id"))
_DATASET = select(SqlDataset.dataset_uuid).where(
    SqlDataset.experiment_id == bindparam("experiment_id"),
    SqlDataset.name == bindparam("name"), SqlDataset.digest == bindparam("digest"))
_INSERTS = {model: insert(model.__table__) for model in (
    SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric, SqlDataset, SqlInput, SqlInputTag)}


def sql_store(client: Any) -> SqlAlchemyStore | None:  # noqa: ANN401 - MlflowClient
    """The client's tracking store when it is a SQLAlchemy one, else None."""
    store = client._tracking_client.store  # noqa: SLF001 - the pinned client's store
    return store if type(store) is SqlAlchemyStore else None


def registry_sql_store(client: Any) -> RegistrySqlStore | None:  # noqa: ANN401
    """The client's model registry store when it is a SQLAlchemy one, else None."""
    store = client._get_registry_client().store  # noqa: SLF001 - the pinned client's store
    return store if type(store) is RegistrySqlStore else None


def read_alias(store: RegistrySqlStore, name: str, alias: str) -> int | None:
    """The version `alias` points to in registered model `name`; None if it has no such
    alias. A registered model that does not exist raises MLflow's RESOURCE_DOES_NOT_EXIST,
    as `get_model_version_by_alias` does (deleting a model or version deletes its aliases,
    so an alias row always names a live version)."""
    workspace = store._get_active_workspace()  # noqa: SLF001 - as the store filters
    with store.engine.connect() as conn:
        version = conn.execute(_ALIAS_VERSION, {"workspace": workspace, "name": name,
                                                "alias": alias}).scalar_one_or_none()
        if version is not None:
            return int(version)
        registered = conn.execute(_REGISTERED, {"workspace": workspace, "name": name}).first()
    if registered is None:
        raise MlflowException(f"Registered Model with name={name} not found",
                              RESOURCE_DOES_NOT_EXIST)
    return None


def write_finished_run(store: SqlAlchemyStore, experiment_id: str, name: str,
                       tags: dict[str, str], params: dict[str, str],
                       metrics: dict[str, float], datasets: Sequence[DatasetInput],
                       start_ms: int, end_ms: int) -> tuple[str, str]:
    """Insert one finished run; returns (run id, artifact URI). `metrics` must be finite
    (the caller drops the rest, as `Tracker.log_run` always did)."""
    run_id = uuid.uuid4().hex
    all_tags, params = _validated({**tags, MLFLOW_RUN_NAME: name}, params, metrics)
    with _write_transaction(store) as conn:
        artifact_uri = append_to_uri_path(_active_location(conn, experiment_id), run_id,
                                          SqlAlchemyStore.ARTIFACTS_FOLDER_NAME)
        conn.execute(_INSERTS[SqlRun], [_run_row(
            run_id, name, artifact_uri, experiment_id, all_tags.get(MLFLOW_USER, "unknown"),
            start_ms, end_ms)])
        _insert(conn, SqlTag, [{"run_uuid": run_id, "key": k, "value": v}
                               for k, v in all_tags.items()])
        _insert(conn, SqlParam, [{"run_uuid": run_id, "key": k, "value": v}
                                 for k, v in params.items()])
        rows = [_metric_row(run_id, k, v, start_ms) for k, v in metrics.items()]
        _insert(conn, SqlMetric, rows)
        _insert(conn, SqlLatestMetric, rows)
        _write_inputs(conn, int(experiment_id), run_id, datasets)
    return run_id, artifact_uri


# What MLflow's managed session sets on a SQLite connection before each use; set here the
# same way (outside the transaction, which the driver opens at the first INSERT).
_PRAGMAS_SET = "greenloop_sqlite_pragmas"
_SQLITE_PRAGMAS = ("PRAGMA foreign_keys = ON;", "PRAGMA busy_timeout = 20000;",
                   "PRAGMA case_sensitive_like = true;")


@contextmanager
def _write_transaction(store: SqlAlchemyStore) -> Iterator[Connection]:
    """One transaction on a connection of the store's engine, committed whole or rolled
    back. An ORM session (MLflow's `ManagedSessionMaker`) does the same with ~1.2 ms more
    CPU per run of a skip (its unit of work, its query objects), measured 7 Dec: these are
    plain inserts, with nothing for the ORM to track."""
    with store.engine.begin() as conn:
        info = conn.connection.info  # lives as long as the pooled database connection
        if store.db_type == SQLITE and not info.get(_PRAGMAS_SET):
            for pragma in _SQLITE_PRAGMAS:  # connection settings: once per connection
                conn.exec_driver_sql(pragma)
            info[_PRAGMAS_SET] = True
        yield conn


def _validated(tags: dict[str, str], params: dict[str, str], metrics: dict[str, float]
               ) -> tuple[dict[str, str], dict[str, str]]:
    """MLflow's own checks of a logged batch (names, lengths, counts; long values cut as
    it cuts them): a key MLflow would refuse is refused here too."""
    checked_metrics, checked_params, checked_tags = _validate_batch_log_data(
        [Metric(k, v, 0, 0) for k, v in metrics.items()],
        [Param(k, v) for k, v in params.items()], [RunTag(k, v) for k, v in tags.items()])
    _validate_batch_log_limits(checked_metrics, checked_params, checked_tags)
    return {t.key: t.value for t in checked_tags}, {p.key: p.value for p in checked_params}


def _active_location(conn: Connection, experiment_id: str) -> str:
    """The experiment's artifact location; refused, as MLflow refuses, if it is deleted."""
    found = conn.execute(_EXPERIMENT, {"experiment_id": int(experiment_id)}).one_or_none()
    if found is None:
        raise MlflowException(f"No Experiment with id={experiment_id} exists",
                              RESOURCE_DOES_NOT_EXIST)
    if found[0] != LifecycleStage.ACTIVE:
        raise MlflowException(f"The experiment {experiment_id} must be in the 'active' state. "
                              f"Current state is {found[0]}.", INVALID_PARAMETER_VALUE)
    return str(found[1])


def _run_row(run_id: str, name: str, artifact_uri: str, experiment_id: str, user_id: str,
             start_ms: int, end_ms: int) -> dict[str, Any]:
    return {"run_uuid": run_id, "name": name, "artifact_uri": artifact_uri,
            "experiment_id": int(experiment_id),
            "source_type": SourceType.to_string(SourceType.UNKNOWN), "source_name": "",
            "entry_point_name": "", "user_id": user_id,
            "status": RunStatus.to_string(RunStatus.FINISHED), "start_time": start_ms,
            "end_time": end_ms, "deleted_time": None, "source_version": "",
            "lifecycle_stage": LifecycleStage.ACTIVE}


def _metric_row(run_id: str, key: str, value: float, ts_ms: int) -> dict[str, Any]:
    if not math.isfinite(value):
        raise ValueError(f"metric {key}={value}: only finite values are written here")
    return {"run_uuid": run_id, "key": key, "value": float(value), "timestamp": ts_ms,
            "step": 0, "is_nan": False}


def _insert(conn: Connection, model: type, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(_INSERTS[model], rows)


def _write_inputs(conn: Connection, experiment_id: int, run_id: str,
                  datasets: Sequence[DatasetInput]) -> None:
    """Datasets are shared per experiment by (name, digest), as MLflow's store does: an
    existing one is linked, a new one inserted; each gets an input edge with its tags."""
    seen: set[tuple[str, str]] = set()
    for dataset_input in datasets:
        ds = dataset_input.dataset
        if (ds.name, ds.digest) in seen:
            continue
        seen.add((ds.name, ds.digest))
        existing = conn.execute(_DATASET, {"experiment_id": experiment_id, "name": ds.name,
                                           "digest": ds.digest}).one_or_none()
        if existing is None:
            dataset_uuid = uuid.uuid4().hex
            _insert(conn, SqlDataset, [{
                "dataset_uuid": dataset_uuid, "experiment_id": experiment_id, "name": ds.name,
                "digest": ds.digest, "dataset_source_type": ds.source_type,
                "dataset_source": ds.source, "dataset_schema": ds.schema,
                "dataset_profile": ds.profile}])
        else:
            dataset_uuid = existing[0]
        input_uuid = uuid.uuid4().hex
        _insert(conn, SqlInput, [{"input_uuid": input_uuid, "source_type": "DATASET",
                                     "source_id": dataset_uuid, "destination_type": "RUN",
                                     "destination_id": run_id}])
        _insert(conn, SqlInputTag, [{"input_uuid": input_uuid, "name": t.key,
                                        "value": t.value} for t in dataset_input.tags])
