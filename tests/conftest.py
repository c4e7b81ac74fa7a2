"""Shared fixtures: seeded synthetic streams with planted drift, and a throwaway
project home (data, state, MLflow on sqlite) per test."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

for _k, _v in {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true", "CODECARBON_LOG_LEVEL": "error",
               "DVC_NO_ANALYTICS": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
               "GIT_PYTHON_REFRESH": "quiet",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_k, _v)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("GREENLOOP_HOME", None)


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)  # tiny models; the two cores are shared with the servers


@pytest.fixture(autouse=True)
def _environ_restored() -> Iterator[None]:
    """A command called in-process (CliRunner) sets Prefect's logging variables and its
    server's recorder batching in os.environ, as its own process would (e.g. `ingest`
    quiets Prefect's console): put them back after each test, so no later test, nor a
    server it starts, inherits them.
    Only those: a module sets others once at import for the whole process (the MLflow
    request bounds of tasks/tracking.py), which later tests rely on as users' runs do."""
    before = dict(os.environ)
    yield
    for key in set(before) | set(os.environ):
        if (not key.startswith(("PREFECT_LOGGING_", "PREFECT_SERVER_SERVICES_"))
                or before.get(key) == os.environ.get(key)):
            continue
        if key in before:
            os.environ[key] = before[key]
        else:
            del os.environ[key]


def make_frame(rows: int, seed: int, shift: dict[str, float] | None = None,
               n_features: int = 5, flip: bool = False, task: str = "classification",
               n_classes: int = 2) -> pd.DataFrame:
    """Features x0..x{n-1} ~ N(0,1) (+ shift per column); the label depends on x0 + x1.

    `flip` inverts the concept (labels reversed): a real quality drop, no covariate drift.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, n_features))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(n_features)])
    signal = frame["x0"] + frame["x1"]
    for col, delta in (shift or {}).items():
        frame[col] = frame[col] + delta
    if task == "regression":
        frame["y"] = 10 + 3 * signal * (-1 if flip else 1) + rng.normal(scale=0.3, size=rows)
    elif n_classes == 2:
        frame["y"] = np.where((signal > 0) ^ flip, "up", "down")
    else:
        edges = np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1])
        frame["y"] = [f"c{int(k)}" for k in np.digitize(signal, edges)]
    return frame


def drifting_stream() -> pd.DataFrame:
    """Quiet, then a covariate shift with a concept flip: skip, then a retrain."""
    quiet = [make_frame(200, seed=s) for s in range(4)]
    shifted = [make_frame(200, seed=10 + s, shift={"x0": 2.0, "x1": 2.0, "x2": 2.0}, flip=True)
               for s in range(2)]
    return pd.concat(quiet + shifted, ignore_index=True)


def write_project(home: Path, source: pd.DataFrame, *, name: str = "synth",
                  task: str = "classification", batch_rows: int = 200,
                  overrides: dict | None = None) -> Path:
    """A project home with one source file and its config; returns the config path."""
    (home / "data" / "sources" / name).mkdir(parents=True, exist_ok=True)
    source.to_csv(home / "data" / "sources" / name / "source.csv", index=False)
    cfg: dict = {
        "name": name,
        "data": {"path": f"data/sources/{name}/source.csv", "target": "y", "task": task,
                 "batch_rows": batch_rows, "bootstrap_batches": 2},
        "model": {"hidden": [16], "seed": 0},
        "train": {"retrain": {"epochs": 5, "batch_size": 64, "lr": 0.01},
                  "finetune": {"epochs": 2, "batch_size": 64, "lr": 0.01},
                  "replay_batches": 2},
        # 200-row batches: Wasserstein noise alone reaches ~0.1, so the test threshold is 0.25.
        "drift": {"method": "wasserstein", "threshold": 0.25, "reference_batches": 2,
                  "report": "on_retrain"},
        "policy": {"name": "gated", "finetune_quality_drop": 0.05, "retrain_quality_drop": 0.2},
        "energy": {"country_iso_code": "USA"},
    }
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    (home / "configs").mkdir(exist_ok=True)
    path = home / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh project home; runtimes cached for it are dropped afterwards."""
    yield tmp_path
    try:
        from tasks.runtime import forget_runtimes
    except ImportError:  # pragma: no cover
        return
    forget_runtimes()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the session (~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@contextmanager
def held_by_another_thread(lock: AbstractContextManager[object]) -> Iterator[None]:
    """For the block, `lock` is entered and held by another thread (as a served update
    holds its model's lock), then released."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30), "the other thread never took the lock"
        yield
    finally:
        release.set()
        t.join()
