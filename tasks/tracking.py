"""The one module that talks to MLflow.

Uses `MlflowClient` with explicit run ids (the fluent "active run" is thread-local and
breaks under `.submit()`). Model versions are MLflow pyfunc models (tasks/mlmodel.py
writes the `MLmodel` beside the `state_dict` and preprocessing JSON); the version in
service carries the alias `champion`. Per-batch runs declare their data as dataset
inputs and can nest under a parent run (one per replay or served session).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A tracking server that is down must not hang a flow for minutes (default ~4 min).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag  # noqa: E402
from mlflow.exceptions import MlflowException, RestException  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT as DATASET_CONTEXT_TAG  # noqa: E402

from greenloop.model import TabularModel  # noqa: E402
from tasks.mlflow_onewrite import (  # noqa: E402
    read_alias,
    registry_sql_store,
    sql_store,
    write_finished_run,
)
from tasks.mlflow_sqlite import use_wal  # noqa: E402

CHAMPION = "champion"
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class DatasetRef:
    """A run's data as an MLflow dataset input, without hashing the frame again: the
    digest is the DVC md5 of the accepted file, the source that file."""

    name: str
    digest: str
    source: str  # absolute path of the file
    context: str  # "training" or "batch"
    rows: int
    schema_json: str | None = None  # MLflow column schema, if known

    def as_input(self) -> DatasetInput:
        profile = json.dumps({"num_rows": self.rows})
        schema = json.dumps({"mlflow_colspec": json.loads(self.schema_json)}) \
            if self.schema_json else None
        dataset = Dataset(name=self.name, digest=self.digest[:36], source_type="local",
                          source=json.dumps({"uri": self.source}), schema=schema,
                          profile=profile)
        return DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT_TAG, self.context)])


class RegisteredModelMissing(LookupError):
    """MLflow has no registered model of this name (deleted, or mlflow.db replaced)."""


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path) -> None:
        self.uri = tracking_uri
        use_wal(tracking_uri)  # before MLflow's first connection to its SQLite file
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment = experiment
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if tracking_uri.startswith("sqlite:") or "://" not in tracking_uri:
                location = (artifact_root / experiment).resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment,
                                                               artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self._registered: set[str] = set()  # registered models known to exist
        self._last_run: tuple[str, str] = ("", "")  # (run id, artifact URI) from log_run
        self._sql = sql_store(self.client)  # None for a tracking server over HTTP
        self._registry_sql = registry_sql_store(self.client)
        self._aliases: dict[str, int] = {}  # the champion this process last read or set

    def log_run(self, name: str, params: dict[str, Any], metrics: dict[str, float],
                tags: dict[str, str], artifacts: list[Path] = (),
                datasets: Sequence[DatasetRef] = (), parent_run_id: str | None = None) -> str:
        """A finished run; nested under `parent_run_id` when given (passed explicitly:
        the fluent active run is thread-local)."""
        all_tags = {k: str(v)[:5000] for k, v in tags.items()}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        params_text = {k: str(v)[:6000] for k, v in params.items()}
        finite = {k: float(v) for k, v in metrics.items() if _finite(v)}
        inputs = [d.as_input() for d in datasets]
        if self._sql is not None:  # one transaction instead of four (tasks/mlflow_onewrite.py)
            now_ms = int(time.time() * 1000)
            run_id, artifact_uri = write_finished_run(
                self._sql, self.experiment_id, name, all_tags, params_text, finite, inputs,
                now_ms, now_ms)
        else:
            run_id, artifact_uri = self._log_run_by_client(name, all_tags, params_text,
                                                           finite, inputs)
        self._last_run = (run_id, artifact_uri)
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))
        return run_id

    def _log_run_by_client(self, name: str, tags: dict[str, str], params: dict[str, str],
                           metrics: dict[str, float], inputs: list[DatasetInput]
                           ) -> tuple[str, str]:
        """The same run through `MlflowClient` (a tracking server over HTTP)."""
        from mlflow.entities import Metric, Param

        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        ts = int(run.info.start_time)
        self.client.log_batch(run_id, metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()],
                              params=[Param(k, v) for k, v in params.items()])
        if inputs:
            self.client.log_inputs(run_id, inputs)
        self.client.set_terminated(run_id)
        return run_id, run.info.artifact_uri

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """More metrics on an existing run (the served mode's whole-window bill)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0)
                                               for k, v in metrics.items() if _finite(v)])

    def log_artifact(self, run_id: str, path: Path) -> None:
        """A file added to a run after it finished (an on-demand drift report)."""
        self.client.log_artifact(run_id, str(path))

    def start_parent(self, name: str, tags: dict[str, str]) -> str:
        """An open run that per-batch runs nest under (one per replay or served session)."""
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={k: str(v)[:5000] for k, v in tags.items()})
        return run.info.run_id

    def finish_parent(self, run_id: str, metrics: dict[str, float], tags: dict[str, str],
                      status: str = "FINISHED") -> None:
        """The totals on the parent run, then close it (`status` FAILED for an attempt
        that raised: its totals are what the ledger held at that point)."""
        from mlflow.entities import Metric, RunTag

        ts = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items() if _finite(v)],
            tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=status)

    def register(self, model_name: str, run_id: str, model_dir: Path, tags: dict[str, str]) -> int:
        self.client.log_artifacts(run_id, str(model_dir), "model")
        self._ensure_registered(model_name)
        # The artifact URI is known from log_run: no extra round trip per version.
        last_id, last_uri = self._last_run
        artifact_uri = last_uri if last_id == run_id else \
            self.client.get_run(run_id).info.artifact_uri
        source = f"{artifact_uri}/model"
        version_tags = {k: str(v) for k, v in tags.items()}
        try:
            mv = self.client.create_model_version(model_name, source=source, run_id=run_id,
                                                  tags=version_tags)
        except MlflowException:  # e.g. someone deleted the registered model meanwhile
            self._registered.discard(model_name)
            self._ensure_registered(model_name)
            mv = self.client.create_model_version(model_name, source=source, run_id=run_id,
                                                  tags=version_tags)
        return int(mv.version)

    def _ensure_registered(self, model_name: str) -> None:
        """Create the registered model once; afterwards, not one failing call per version."""
        if model_name in self._registered:
            return
        try:
            self.client.create_registered_model(model_name, tags={"project": "greenloop"})
        except MlflowException as e:
            if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
                raise
        self._registered.add(model_name)

    def champion(self, model_name: str) -> int | None:
        try:
            return int(self.client.get_model_version_by_alias(model_name, CHAMPION).version)
        except (MlflowException, RestException):
            return None

    def set_champion(self, model_name: str, version: int) -> None:
        self.client.set_registered_model_alias(model_name, CHAMPION, str(version))
        self._aliases[model_name] = version

    def known_champion(self, model_name: str) -> int | None:
        """The alias as this process last read or set it, else read from MLflow. Saves a
        query per batch; a crash that leaves the alias behind the ledger starts a new
        process, whose first look is a real read."""
        if model_name not in self._aliases:
            version = self.champion(model_name)
            if version is None:
                return None
            self._aliases[model_name] = version
        return self._aliases[model_name]

    def registry_champion(self, model_name: str) -> int | None:
        """A fresh read of the alias (one request). Raises RegisteredModelMissing when
        the registered model itself is gone, which `champion` cannot tell from no alias.
        On a SQL store, one SELECT (tasks/mlflow_onewrite.py: read_alias)."""
        try:
            version = (read_alias(self._registry_sql, model_name, CHAMPION)
                       if self._registry_sql is not None else self._client_alias(model_name))
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":  # the registered model is gone
                self._registered.discard(model_name)
                self._aliases.pop(model_name, None)
                raise RegisteredModelMissing(model_name) from e
            raise
        if version is None:  # registered, no champion alias
            self._aliases.pop(model_name, None)
        else:
            self._aliases[model_name] = version
        return version

    def _client_alias(self, model_name: str) -> int | None:
        """The alias through the client (a tracking server): None when it is not set."""
        try:
            return int(self.client.get_model_version_by_alias(model_name, CHAMPION).version)
        except MlflowException as e:
            if e.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(e):
                return None
            raise

    def tag_version(self, model_name: str, version: int, key: str, value: str) -> None:
        self.client.set_model_version_tag(model_name, str(version), key, value)

    def fetch_model(self, model_name: str, version: int, cache: Path) -> TabularModel:
        """Load a version: from the local cache, else its artifacts (weights_only load)."""
        folder = cache / f"v{version}"
        if not (folder / "state_dict.pt").exists():
            mv = self.client.get_model_version(model_name, str(version))
            tmp = cache / f".v{version}.download"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp),
                                                tracking_uri=self.uri)
            inner = next(p.parent for p in tmp.rglob("state_dict.pt"))
            inner.replace(folder)
            shutil.rmtree(tmp, ignore_errors=True)
        return TabularModel.load(folder)


def _finite(v: float) -> bool:
    try:
        return float(v) == float(v) and abs(float(v)) != float("inf")
    except (TypeError, ValueError):
        return False
