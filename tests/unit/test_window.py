"""The retrain window race (greenloop/window.py): when it runs, and that it keeps the
window whose model predicts the recent holdouts better."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenloop.config import GreenloopConfig
from greenloop.data import Schema
from greenloop.model import TabularModel
from greenloop.steps import Batch, make_batch
from greenloop.window import AUTO_WINDOW_BATCHES, after_refusals, racing, train_for

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


def _params(model: TabularModel) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.net.parameters()]


def test_a_refit_from_the_champion_starts_from_its_weights_and_scaling() -> None:
    """`refit_start: champion`: the full retrain's rows and recipe, the champion's weights
    and preprocessing as the start; the champion itself is not modified. A near-zero
    learning rate for one epoch leaves the start visible."""
    history = _stream(6, 80, 1.0)
    new = _stream(1, 80, 1.0, start=6, seed=3)[0]
    still = {"epochs": 1, "lr": 1e-12}
    champion = train_for("retrain", None, history[0], [], SCHEMA,
                         _cfg(train={}), seed=0).candidate
    before = _params(champion)
    warm = _cfg(train={"refit_start": "champion", "retrain": still})
    trained = train_for("retrain", champion, new, history, SCHEMA, warm, seed=1)
    assert trained.rows == sum(len(b.train) for b in history) + len(new.train)
    assert trained.candidate.pre.means == champion.pre.means  # not refitted on the window
    for got, start in zip(_params(trained.candidate), before, strict=True):
        np.testing.assert_allclose(got, start, atol=1e-6)
    for kept, start in zip(_params(champion), before, strict=True):
        np.testing.assert_array_equal(kept, start)
    scratch = train_for("retrain", champion, new, history, SCHEMA,
                        _cfg(train={"retrain": still}), seed=1).candidate
    assert scratch.pre.means != champion.pre.means  # the default: a new model
    assert any(not np.allclose(a, b, atol=1e-3)
               for a, b in zip(_params(scratch), before, strict=True))


def test_a_refit_from_the_champion_applies_to_both_raced_windows() -> None:
    history = _stream(12, 60, 1.0)
    new = _stream(1, 60, 1.0, start=12, seed=2)[0]
    champion = train_for("retrain", None, history[0], [], SCHEMA,
                         _cfg(train={}), seed=0).candidate
    cfg = _cfg(train={"retrain_window_batches": "auto", "refit_start": "champion"})
    assert racing("retrain", history, cfg)
    trained = train_for("retrain", champion, new, history, SCHEMA, cfg, seed=0)
    assert trained.candidate.pre.means == champion.pre.means


def test_without_a_champion_a_refit_from_the_champion_starts_a_new_model() -> None:
    history = _stream(3, 60, 1.0)
    new = _stream(1, 60, 1.0, start=3, seed=2)[0]
    cfg = _cfg(train={"refit_start": "champion"})
    trained = train_for("retrain", None, new, history, SCHEMA, cfg, seed=0)
    fresh = train_for("retrain", None, new, history, SCHEMA, _cfg(train={}), seed=0)
    for a, b in zip(_params(trained.candidate), _params(fresh.candidate), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_training_cost_counts_the_epochs_early_stopping_ran() -> None:
    history = _stream(10, 200, 1.0)
    new = _stream(1, 200, 1.0, start=10, seed=2)[0]
    stopping = _cfg(train={"retrain": {"epochs": 200, "patience": 1, "lr": 0.01}})
    trained = train_for("retrain", None, new, history, SCHEMA, stopping, seed=0)
    fitted = trained.rows - int(trained.rows * 0.1)  # 10% held out for early stopping
    epochs, rest = divmod(trained.row_epochs, fitted)
    assert rest == 0 and 0 < epochs < 200  # stopped early, and counted as it ran
    assert trained.candidate.row_epochs == trained.row_epochs
    fixed = _cfg(train={"retrain": {"epochs": 3}})  # no patience: every epoch of the recipe
    assert train_for("retrain", None, new, history, SCHEMA, fixed, seed=0).row_epochs \
        == trained.rows * 3


def test_the_race_costs_both_models_training() -> None:
    history = _stream(12, 50, 1.0)
    new = _stream(1, 50, 1.0, start=12, seed=2)[0]
    cfg = _cfg(train={"retrain_window_batches": "auto", "retrain": {"epochs": 2}})
    trained = train_for("retrain", None, new, history, SCHEMA, cfg, seed=0)
    assert trained.note  # the race ran
    assert trained.row_epochs == trained.rows * 2  # both windows' rows, 2 epochs each


def test_after_a_refused_refit_on_all_history_the_next_trains_on_the_recent_window() -> None:
    """Each refusal switches the calibrated default's window: all history, then the last
    8 batches, then all history again. Anything configured is left alone."""
    cfg = _cfg(train={})
    assert after_refusals("retrain", cfg, 0) is cfg
    recent = after_refusals("retrain", cfg, 1)
    assert recent.train.retrain_window_batches == AUTO_WINDOW_BATCHES
    assert after_refusals("retrain", cfg, 2) is cfg
    assert after_refusals("finetune", cfg, 1) is cfg
    assert after_refusals("retrain", cfg.with_policy("periodic"), 1).train \
        .retrain_window_batches is None
    fixed = _cfg(train={}, policy={"retrain_quality_drop": 0.1})
    assert after_refusals("retrain", fixed, 1) is fixed
    for window in (16, "auto"):
        chosen = _cfg(train={"retrain_window_batches": window})
        assert after_refusals("retrain", chosen, 1) is chosen


def test_the_step_trains_the_window_its_refusals_call_for() -> None:
    from greenloop.policy import make_policy
    from greenloop.step import Champion, StepInput, step

    cfg = _cfg(train={})
    history = _stream(12, 60, 1.0)
    new = _stream(1, 60, 1.0, start=12, seed=2)[0]
    first = train_for("retrain", None, history[-1], history, SCHEMA, cfg, seed=0).candidate
    champion = Champion(1, first, 0.1, history[-1].seq)
    everything = sum(len(b.train) for b in history) + len(new.train)
    recent = sum(len(b.train) for b in history[-AUTO_WINDOW_BATCHES:]) + len(new.train)
    for refused, rows, said in ((0, everything, False), (1, recent, True), (2, everything, False)):
        inp = StepInput(new, history, champion, 11, force="a scheduled full retrain",
                        refused_retrains=lambda n=refused: n)
        out = step(inp, cfg, SCHEMA, make_policy(cfg.policy))
        assert out.decision.action == "retrain"
        assert out.train_rows == rows
        assert ("the last full retrain on all history was refused" in out.decision.reason) \
            == said
