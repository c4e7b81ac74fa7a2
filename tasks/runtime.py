"""Per-process state shared by the tasks of a flow: config, ledger, meter, caches.

Flows take plain, JSON-able parameters (config path, policy, batch path) so that
they show up readably in the Prefect UI; the heavy objects they need (loaded models,
the CodeCarbon tracker, the MLflow client) live here, once per process.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from greenloop.config import GreenloopConfig, load_config
from greenloop.data import Schema, infer_schema, read_table
from greenloop.energy import Meter
from greenloop.ledger import Ledger
from greenloop.model import TabularModel
from greenloop.policy import Policy, make_policy
from greenloop.steps import Batch, make_batch
from greenloop.train import limit_torch_threads
from greenloop.workspace import Workspace
from tasks import handoff
from tasks.frames import FRAMES, StoredBatch
from tasks.tracking import Tracker

_FRAMES_KEYS = itertools.count()
KEPT_MODELS = 4  # loaded versions kept per runtime (a rollback target is fetched again)


@dataclass
class Runtime:
    cfg: GreenloopConfig
    ws: Workspace
    config_path: str
    # Every accepted batch's handle (a few hundred bytes each; the frames are in FRAMES).
    batches: dict[str, StoredBatch] = field(default_factory=dict)
    # The versions loaded last (the champion is asked for at every batch, so it stays).
    models: OrderedDict[int, TabularModel] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # This runtime's batches in tasks.frames.FRAMES (unique per runtime, unlike id()).
    frames_key: int = field(default_factory=lambda: next(_FRAMES_KEYS))
    # The open MLflow run that per-batch runs nest under (a replay or a served session).
    parent_run_id: str | None = None

    @property
    def policy_name(self) -> str:
        return self.cfg.policy.name

    @property
    def model_name(self) -> str:
        """One registered model per dataset and policy (or per policy namespace, which
        `compare` sets): policies never share a champion."""
        return f"{self.cfg.name}-{self.cfg.policy.namespace or self.policy_name}"

    @property
    def experiment(self) -> str:
        return self.cfg.tracking.experiment or f"greenloop-{self.cfg.name}"

    @property
    def tracking_uri(self) -> str:
        configured = self.cfg.tracking.tracking_uri
        if configured and configured.startswith(("sqlite:", "file:")):
            # A local store named by the config stays in the project (the environment's
            # MLFLOW_TRACKING_URI is the operator's choice and is not restricted).
            scheme, rest = configured.split(":", 1)
            if scheme == "sqlite":  # sqlite:///relative.db, sqlite:////absolute.db
                local = rest[3:] if rest.startswith("///") else rest.lstrip("/")
            else:  # file:///absolute, file:relative
                local = "/" + rest.lstrip("/") if rest.startswith("//") else rest
            self.ws.inside(self.ws.home, local)
        return (os.environ.get("MLFLOW_TRACKING_URI") or configured
                or self.ws.default_tracking_uri())

    @cached_property
    def source_path(self) -> Path:
        return self.ws.source(self.cfg.data.path)

    @cached_property
    def source(self) -> pd.DataFrame:
        return read_table(self.source_path)

    @cached_property
    def schema(self) -> Schema:
        return infer_schema(self.source, self.cfg.data)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.ws.ledger_path)

    @cached_property
    def meter(self) -> Meter:
        return Meter(self.cfg.energy)

    @cached_property
    def policy(self) -> Policy:
        return make_policy(self.cfg.policy)

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.experiment, self.ws.artifacts)

    def batch(self, digest: str, seq: int, accepted_path: str, md5: str | None = None) -> Batch:
        """An accepted batch, its frame held within the process's budget and read back
        from its file when evicted (tasks/frames.py); `md5`, DVC's hash of the file, lets
        a frame this process wrote be handed over instead of decoded again
        (tasks/handoff.py). Keyed by runtime: a compare's policies never share a frame."""
        stored = self.batches.get(digest)
        if stored is None:
            path, fraction = self.ws.home / accepted_path, self.cfg.train.holdout_fraction

            def materialize() -> Batch:
                return make_batch(seq, digest, handoff.load(path, md5), fraction)

            stored = self.batches[digest] = StoredBatch(seq, digest, (self.frames_key, digest),
                                                        materialize)
        return stored

    def model(self, version: int) -> TabularModel:
        """A registered version, loaded once and kept while it is among the
        KEPT_MODELS most recently asked for: every version a model was ever promoted
        to stayed loaded before, for the life of a served process."""
        if version in self.models:
            self.models.move_to_end(version)
            return self.models[version]
        self.models[version] = self.tracker.fetch_model(
            self.model_name, version, self.ws.models(self.model_name))
        while len(self.models) > KEPT_MODELS:
            self.models.popitem(last=False)
        return self.models[version]


limit_torch_threads()  # at import: before any flow of this process trains

_RUNTIMES: dict[tuple[str, str | None, str], Runtime] = {}
_GUARD = threading.Lock()


def get_runtime(config: str, policy: str | None = None, home: str | None = None) -> Runtime:
    ws = Workspace.from_env(home)
    key = (str(Path(config).resolve()), policy, str(ws.home))
    with _GUARD:
        if key not in _RUNTIMES:
            cfg = load_config(config)
            if policy:
                cfg = cfg.with_policy(policy)
            _RUNTIMES[key] = Runtime(cfg, ws, config)
        return _RUNTIMES[key]


def forget_runtimes() -> None:
    """Drop cached runtimes (tests that build several homes in one process)."""
    with _GUARD:
        for rt in _RUNTIMES.values():
            if "ledger" in rt.__dict__:
                rt.ledger.close()
        _RUNTIMES.clear()
        FRAMES.clear()
