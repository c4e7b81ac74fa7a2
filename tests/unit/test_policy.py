"""The decision table, and planted drift end to end through Evidently and a real model:
no drift -> skip, mild -> fine-tune, strong -> retrain, with exactly the drifted columns."""

from pathlib import Path

import pytest

from greenloop.config import DataConfig, DriftConfig, ModelConfig, PolicyConfig, RecipeConfig
from greenloop.data import infer_schema, validate_batch
from greenloop.drift import detect
from greenloop.evaluate import evaluate, relative_drop
from greenloop.policy import Gated, Observation, make_policy
from greenloop.train import retrain
from tests.conftest import make_frame

CFG = PolicyConfig(finetune_quality_drop=0.05, retrain_quality_drop=0.2,
                   finetune_drift_share=0.5, retrain_drift_share=0.5)


def obs(drift: float, drop: float, **kw) -> Observation:
    return Observation(batch_index=kw.pop("i", 1), drift_share=drift, drifted_columns=[],
                       quality_drop=drop, **kw)


@pytest.mark.parametrize(
    ("drift", "drop", "action"),
    [(0.0, 0.0, "skip"), (0.4, 0.04, "skip"), (0.4, 0.06, "finetune"), (0.6, 0.0, "finetune"),
     (0.6, 0.19, "finetune"), (0.6, 0.25, "retrain"), (0.2, 0.5, "finetune")],
)
def test_gated_table(drift: float, drop: float, action: str) -> None:
    d = Gated(CFG).decide(obs(drift, drop))
    assert d.action == action and d.reason


def test_gated_new_class_finetunes() -> None:
    assert Gated(CFG).decide(obs(0.0, 0.0, new_classes=["c9"])).action == "finetune"


def test_other_policies() -> None:
    periodic = make_policy(CFG.model_copy(update={"name": "periodic", "periodic_every": 3}))
    assert [periodic.decide(obs(0, 0, i=i)).action for i in range(4)] == \
        ["retrain", "skip", "skip", "retrain"]
    dr = make_policy(CFG.model_copy(update={"name": "drift-retrain"}))
    assert dr.decide(obs(0.6, 0)).action == "retrain" and dr.decide(obs(0.4, 0.9)).action == "skip"
    assert make_policy(CFG.model_copy(update={"name": "never"})).decide(obs(1, 1)).action == "skip"
    assert make_policy(CFG.model_copy(update={"name": "finetune"})).decide(obs(0, 0)).action == \
        "finetune"


def test_cost_aware_prices_measured_energy() -> None:
    ca = make_policy(CFG.model_copy(update={"name": "cost-aware", "points_per_kwh": 100.0}))
    unmeasured = ca.decide(obs(0.6, 0.3))
    assert unmeasured.action == "retrain" and "not yet measured" in unmeasured.reason
    costs = {"finetune": 0.0001, "retrain": 0.01}
    gains = {"finetune": 0.1, "retrain": 0.3}
    # A 0.3 drop: retrain gains 0.3 - 0.01/100, fine-tune 0.1 - 0.0001/100 -> retrain.
    assert ca.decide(obs(0.6, 0.3, mean_energy_kwh=costs, mean_gain=gains)).action == "retrain"
    # Energy priced high (1 point per kWh is cheap energy... 0.001 points/kWh is dear): skip.
    dear = make_policy(CFG.model_copy(update={"name": "cost-aware", "points_per_kwh": 0.001}))
    assert dear.decide(obs(0.6, 0.3, mean_energy_kwh=costs, mean_gain=gains)).action == "skip"


def test_planted_drift_end_to_end() -> None:
    dcfg = DataConfig(path=Path("x"), target="y", task="classification", batch_rows=300)
    reference = make_frame(1200, seed=0)
    schema = infer_schema(reference, dcfg)
    reference = validate_batch(reference, schema, dcfg)
    model = retrain(reference, schema, "classification", ModelConfig(hidden=[16]),
                    RecipeConfig(epochs=15, lr=0.01), seed=0)
    ref_quality = evaluate(model, reference, "y")
    drift_cfg = DriftConfig(method="wasserstein", threshold=0.1)
    streams = {
        "none": make_frame(300, seed=11),
        "mild": make_frame(300, seed=12, shift={"x3": 1.0}),  # one column moves, label kept
        "strong": make_frame(300, seed=13, shift={"x0": 2, "x1": 2, "x2": 2, "x4": 2}, flip=True),
    }
    found = {}
    for name, frame in streams.items():
        frame = validate_batch(frame, schema, dcfg)
        drift = detect(reference, frame, schema, drift_cfg)
        drop = relative_drop("classification", ref_quality, evaluate(model, frame, "y"))
        decision = Gated(CFG.model_copy(update={"finetune_drift_share": 0.2})).decide(
            Observation(1, drift.share, drift.drifted, drop))
        found[name] = (decision.action, sorted(drift.drifted))
    assert found["none"] == ("skip", [])
    assert found["mild"] == ("finetune", ["x3"])
    assert found["strong"] == ("retrain", ["x0", "x1", "x2", "x4"])


def test_training_rows_by_policy_and_action() -> None:
    from greenloop.config import GreenloopConfig
    from greenloop.steps import make_batch, training_rows

    cfg = GreenloopConfig.model_validate({
        "name": "t", "data": {"path": "d.csv", "target": "y", "task": "classification",
                              "batch_rows": 100},
        "train": {"retrain_window_batches": 2, "replay_batches": 1, "replay_ratio": 0.5}})
    history = [make_batch(i, f"{i:064x}", make_frame(100, seed=i), 0.2) for i in range(1, 6)]
    new = make_batch(6, "f" * 64, make_frame(100, seed=6), 0.2)
    per = lambda b: len(b.train)  # noqa: E731
    gated = training_rows("retrain", new, history, cfg, seed=0)
    assert len(gated) == per(history[-2]) + per(history[-1]) + per(new)
    periodic = training_rows("retrain", new, history, cfg.with_policy("periodic"), seed=0)
    assert len(periodic) == sum(per(b) for b in history) + per(new)  # all history
    tuned = training_rows("finetune", new, history, cfg, seed=0)
    assert len(tuned) == per(new) + min(round(0.5 * per(new)), per(history[-1]))
