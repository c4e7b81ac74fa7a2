"""One per-batch algorithm: the pipeline (Prefect tasks, ledger, MLflow, DVC, CodeCarbon)
and the in-memory simulation (no edges) call the same `greenloop.step.step`, so on the same
stream they must agree batch by batch: decisions, the versions promoted, and prequential
quality. The stream is built to exercise every branch: a bootstrap, quiet batches, a
covariate shift with a concept flip, and classes that appear late."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from flows import call_flow
from flows.replay import replay
from greenloop.config import load_config
from greenloop.ledger import Ledger
from greenloop.simulate import load_stream, simulate
from tests.conftest import make_frame, write_project

pytestmark = pytest.mark.integration


def late_classes_stream() -> pd.DataFrame:
    quiet = [make_frame(150, seed=s, n_classes=3) for s in range(4)]
    shifted = [make_frame(150, seed=20 + s, shift={"x0": 1.5, "x1": 1.5}, flip=True,
                          n_classes=3) for s in range(3)]
    late = [make_frame(150, seed=40 + s, n_classes=4) for s in range(3)]  # class c3 appears
    return pd.concat(quiet + shifted + late, ignore_index=True)


@pytest.mark.parametrize("frame_budget_mb", [None, "0"], ids=["frames-kept", "frames-reread"])
def test_pipeline_and_simulation_agree_batch_by_batch(
        prefect_harness, home: Path, monkeypatch: pytest.MonkeyPatch,
        frame_budget_mb: str | None) -> None:
    """Also with no memory for frames at all (tasks/frames.py): every batch of the history
    read back from its accepted file whenever a step needs it, to the same decisions."""
    from tasks.frames import FRAMES

    if frame_budget_mb is not None:
        monkeypatch.setenv("GREENLOOP_FRAME_CACHE_MB", frame_budget_mb)
    loads = FRAMES.loads
    config = write_project(home, late_classes_stream(), batch_rows=150, overrides={
        "drift": {"report": "never"},
        "policy": {"finetune_quality_drop": 0.03, "retrain_quality_drop": 0.15,
                   "retrain_drift_share": 0.3}})
    call_flow(replay, str(config), None, None, False, str(home), "summary.json", False)

    cfg = load_config(config)
    batches, schema = load_stream(cfg, home / cfg.data.path)
    sim = simulate(cfg, batches, schema)

    rows = Ledger(home / "state" / "ledger.sqlite").batches("synth-gated", ("processed",))
    assert [r.seq for r in rows] == [r.seq for r in sim.records] == list(range(1, 11))
    piped = [(r.seq, r.role, r.decision) for r in rows]
    assert piped == [(r.seq, r.role, r.decision) for r in sim.records]
    # Every branch was exercised, so agreement is not trivially all-skip.
    assert {r.decision for r in rows if r.role == "update"} >= {"skip", "finetune"}

    champions = Ledger(home / "state" / "ledger.sqlite").alias_history("synth-gated")
    promoted_in_pipeline = [a["version"] for a in champions]
    promoted_in_sim = [r.promoted_version for r in sim.records if r.promoted_version]
    assert promoted_in_pipeline == promoted_in_sim

    for r, s in zip(rows, sim.records, strict=True):
        if r.quality_before is None:
            assert math.isnan(s.quality_before)
        else:
            assert r.quality_before == pytest.approx(s.quality_before, abs=1e-12), r.seq

    if frame_budget_mb is not None:  # the history really was read back, many times over
        assert FRAMES.loads - loads > 2 * len(rows) and len(FRAMES) == 1

    # A control: a simulation with another threshold decides differently, so the
    # comparison above can fail.
    other = cfg.model_copy(update={"policy": cfg.policy.model_copy(
        update={"finetune_quality_drop": 0.5, "finetune_drift_share": 1.0})})
    assert [r.decision for r in simulate(other, batches, schema).records] != \
        [r.decision for r in sim.records]


def test_after_a_refused_refit_both_train_the_recent_window(prefect_harness,
                                                             home: Path) -> None:
    """Calibrated thresholds on a concept that flips without covariate drift: the first
    refit after the flip, on all history, is refused, and the next ones train on the last
    8 batches. The pipeline counts refusals from its ledger, the simulation in memory:
    they must agree on every decision, its reason and the versions promoted."""
    quiet = [make_frame(150, seed=s) for s in range(6)]
    flipped = [make_frame(150, seed=50 + s, flip=True) for s in range(6)]
    config = write_project(home, pd.concat(quiet + flipped, ignore_index=True),
                           batch_rows=150, overrides={
                               "drift": {"report": "never"}, "train": {"replay_batches": 8},
                               "policy": {"finetune_quality_drop": None,
                                          "retrain_quality_drop": None}})
    call_flow(replay, str(config), None, None, False, str(home), "summary.json", False)

    cfg = load_config(config)
    batches, schema = load_stream(cfg, home / cfg.data.path)
    sim = simulate(cfg, batches, schema)
    ledger = Ledger(home / "state" / "ledger.sqlite")
    rows = ledger.batches("synth-gated", ("processed",))
    assert [(r.seq, r.decision) for r in rows] == [(s.seq, s.decision) for s in sim.records]
    windowed = [r.seq for r in rows if "the last full retrain on all history was refused"
                in (r.reason or "")]
    assert windowed, "the stream no longer makes a refit on all history fail"
    assert ledger.refused_retrains("synth-gated") >= 1
    assert [a["version"] for a in ledger.alias_history("synth-gated")] == \
        [s.promoted_version for s in sim.records if s.promoted_version]
