"""The same commands on any dataset shape (issue 3, "must generalize"): multiclass with
6+ classes, 30+ features, missing feature values, classes absent from a batch, a class
seen for the first time, and regression with categorical features, each through the
real pipeline (ingest, drift, decide, train, evaluate, register) on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows import call_flow
from flows.replay import replay
from greenloop.ledger import Ledger
from greenloop.model import TabularModel
from tests.conftest import make_frame, write_project

pytestmark = pytest.mark.integration

N_FEATURES = 32
CLASSES = [f"c{k}" for k in range(7)]  # c6 arrives late


def multiclass_stream() -> pd.DataFrame:
    """5 batches of 160 rows, 32 features, 7 classes by the sum of two features:
    c6 (the top bin) is held back until batch 4; batch 3 has no c0 at all; ~5% of the
    feature cells are missing."""
    rng = np.random.default_rng(7)
    frames = []
    for b in range(5):
        f = make_frame(400, seed=b, n_features=N_FEATURES)
        signal = f["x0"] + f["x1"]
        label = np.digitize(signal, [-2.0, -1.2, -0.5, 0.0, 0.5, 1.2])  # 0..6
        f["y"] = [CLASSES[k] for k in label]
        keep = f["y"] != "c6" if b < 3 else f["y"] != "c0" if b == 3 else f["y"].notna()
        f = f[keep].head(160).reset_index(drop=True)
        mask = rng.random((len(f), N_FEATURES)) < 0.05
        cols = [f"x{i}" for i in range(N_FEATURES)]
        f[cols] = f[cols].mask(mask)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def regression_stream() -> pd.DataFrame:
    """Rentals-like regression: a numeric target driven by two categorical columns (one
    with missing values) and a numeric one with missing values, 5 batches of 120 rows."""
    rng = np.random.default_rng(3)
    n = 600
    season = rng.choice(["winter", "spring", "summer", "autumn"], size=n)
    weather = rng.choice(["clear", "mist", "rain", None], size=n, p=[0.5, 0.25, 0.2, 0.05])
    temp = rng.normal(15, 8, size=n)
    effect = {"winter": -20.0, "spring": 5.0, "summer": 25.0, "autumn": 0.0}
    rain = {"clear": 10.0, "mist": 0.0, "rain": -15.0, None: 0.0}
    y = (100 + np.array([effect[s] for s in season]) + np.array([rain[w] for w in weather])
         + 2 * temp + rng.normal(0, 3, size=n))
    temp[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({"season": season, "weather": weather, "temp": temp,
                         "hour": rng.integers(0, 24, size=n), "y": y})


def _processed(home: Path, model: str) -> list:
    ledger = Ledger(home / "state" / "ledger.sqlite")
    try:
        return ledger.batches(model, ("processed",))
    finally:
        ledger.close()


def test_multiclass_wide_missing_and_new_class(prefect_harness, home: Path) -> None:
    config = write_project(home, multiclass_stream(), batch_rows=160,
                           overrides={"policy": {"name": "gated"}})
    summary = call_flow(replay, str(config), None, None, False, str(home))

    rows = _processed(home, "synth-gated")
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert summary["metric"] == "accuracy" and 0.0 < summary["prequential"] <= 1.0
    # Batch 4 brings c6 for the first time: the gated policy must update on it.
    new_class_batch = next(r for r in rows if r.seq == 4)
    assert new_class_batch.decision in ("finetune", "retrain")
    champion = summary["mlflow"]["champion_version"]
    model = TabularModel.load(home / "state" / "models" / "synth-gated" / f"v{champion}")
    assert "c6" in model.pre.classes and len(model.pre.classes) == 7
    assert model.pre.n_inputs == N_FEATURES
    frame = multiclass_stream().head(50)
    assert set(model.predict(frame)) <= set(CLASSES)  # NaN features are imputed, not fatal


def test_regression_with_categorical_features(prefect_harness, home: Path) -> None:
    config = write_project(home, regression_stream(), batch_rows=120,
                           overrides={"data": {"categorical": ["season", "weather"],
                                               "task": "regression"},
                                      "policy": {"name": "gated", "finetune_quality_drop": 0.05,
                                                 "retrain_quality_drop": 0.25}})
    summary = call_flow(replay, str(config), "finetune", None, False, str(home))
    assert summary["metric"] == "mae" and summary["task"] == "regression"
    rows = _processed(home, "synth-finetune")
    assert len(rows) == 5 and {r.decision for r in rows if r.role == "update"} == {"finetune"}
    assert np.isfinite(summary["prequential"]) and summary["prequential"] > 0
    model = TabularModel.load(home / "state" / "models" / "synth-finetune"
                              / f"v{summary['mlflow']['champion_version']}")
    assert set(model.pre.categorical) == {"season", "weather"}
    assert model.pre.n_inputs > 2  # one-hot levels beside the numeric columns
    on_disk = json.loads((home / "reports" / "synth-finetune" / "summary.json").read_text())
    assert on_disk["decisions"]["finetune"] == 3
