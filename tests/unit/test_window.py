"""The retrain window race (greenloop/window.py): when it runs, and that it keeps the
window whose model predicts the recent holdouts better."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenloop.config import GreenloopConfig
from greenloop.data import Schema
from greenloop.steps import Batch, make_batch
from greenloop.window import AUTO_WINDOW_BATCHES, racing, train_for

SCHEMA = Schema("y", ("a",), (), ())


def _cfg(**sections: dict[str, object]) -> GreenloopConfig:
    sections.setdefault("train", {"retrain_window_batches": "auto"})
    return GreenloopConfig.model_validate({"name": "t", "data": {
        "path": "x.csv", "target": "y", "task": "regression", "batch_rows": 100}, **sections})


def _stream(n: int, rows: int, sign: float, start: int = 0, seed: int = 0) -> list[Batch]:
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(start, start + n):
        a = rng.uniform(-2, 2, size=rows)
        frame = pd.DataFrame({"a": a, "y": sign * np.sin(2 * a) + 0.05 * rng.normal(size=rows)})
        out.append(make_batch(seq, f"{seq:012x}", frame, 0.2))
    return out


def test_the_race_runs_only_for_a_calibrated_full_retrain_on_auto() -> None:
    long, short = _stream(AUTO_WINDOW_BATCHES + 1, 5, 1.0), _stream(AUTO_WINDOW_BATCHES, 5, 1.0)
    cfg = _cfg()
    assert cfg.train.retrain_window_batches == "auto"
    assert _cfg(train={}).train.retrain_window_batches is None  # all history by default
    assert racing("retrain", long, cfg)
    assert not racing("retrain", short, cfg)  # the window would be all history
    assert not racing("finetune", long, cfg)
    assert not racing("retrain", long, cfg.with_policy("periodic"))  # its own window
    fixed = _cfg(policy={"retrain_quality_drop": 0.1})
    assert not racing("retrain", long, fixed)  # thresholds written against all history
    assert not racing("retrain", long, _cfg(train={"retrain_window_batches": None}))
    assert not racing("retrain", long, _cfg(train={"retrain_window_batches": 8}))


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        _cfg(train={"retrain_window_batches": 0})


def test_after_a_concept_flip_the_recent_window_wins() -> None:
    """y = sin(2a) for 12 batches, then y = -sin(2a): all history averages the two
    concepts; the last 8 batches hold only the new one."""
    history = _stream(12, 200, 1.0) + _stream(7, 200, -1.0, start=12, seed=1)
    new = _stream(1, 200, -1.0, start=19, seed=2)[0]
    trained = train_for("retrain", None, new, history, SCHEMA, _cfg(), seed=0)
    assert trained.note.startswith(f"trained on last {AUTO_WINDOW_BATCHES} batches")
    all_rows = sum(len(b.train) for b in history) + len(new.train)
    window_rows = sum(len(b.train) for b in history[-AUTO_WINDOW_BATCHES:]) + len(new.train)
    assert trained.rows == all_rows + window_rows  # both models' training is counted
    pred = trained.candidate.predict(new.holdout)
    assert np.mean(np.abs(pred - new.holdout["y"].to_numpy())) < 0.3


def test_when_recent_batches_are_thin_all_history_wins() -> None:
    """One concept throughout; the last 8 batches carry 5 rows each: 40 rows cannot
    learn a sine that 3,000 rows can."""
    history = _stream(15, 250, 1.0) + _stream(7, 5, 1.0, start=15, seed=1)
    new = _stream(1, 5, 1.0, start=22, seed=2)[0]
    trained = train_for("retrain", None, new, history, SCHEMA, _cfg(), seed=0)
    assert trained.note.startswith("trained on all history")


def test_no_race_no_note_and_the_configured_rows() -> None:
    history = _stream(10, 50, 1.0)
    new = _stream(1, 50, 1.0, start=10, seed=2)[0]
    trained = train_for("retrain", None, new, history, SCHEMA,
                        _cfg(train={"retrain_window_batches": 3}), seed=0)
    assert trained.note == ""
    assert trained.rows == sum(len(b.train) for b in history[-3:]) + len(new.train)
