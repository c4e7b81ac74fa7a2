"""The pure statistics behind the calibrated defaults (greenloop/calibrate.py) and the
calibrated Gated policy and early stopping that use them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from greenloop.calibrate import (
    accuracy_se,
    beyond_null,
    drop_se,
    mae_se,
    paired_worse,
    row_losses,
    stale,
)
from greenloop.config import PolicyConfig, RecipeConfig
from greenloop.policy import Gated, Observation

# -- standard errors ------------------------------------------------------------------------


def test_accuracy_se_matches_binomial_and_shrinks_with_rows() -> None:
    # (k+1)/(n+2) with k = 0.8 * 98 = 78.4 -> p = 79.4/100 = 0.794
    assert accuracy_se(0.8, 98) == pytest.approx(math.sqrt(0.794 * 0.206 / 98))
    assert accuracy_se(0.8, 400) < accuracy_se(0.8, 100) / 1.9  # ~1/sqrt(n)


def test_accuracy_se_is_positive_on_a_perfect_batch() -> None:
    assert 0 < accuracy_se(1.0, 20) < 0.1
    assert math.isnan(accuracy_se(0.5, 0))


def test_mae_se_is_std_over_sqrt_n() -> None:
    errors = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert mae_se(errors) == pytest.approx(np.std(errors, ddof=1) / math.sqrt(5))
    assert math.isnan(mae_se(np.array([1.0])))
    assert math.isnan(mae_se(np.array([1.0, np.inf])))


def test_drop_se_is_in_the_drops_units() -> None:
    wrong = np.array([1.0] * 10 + [0.0] * 90)
    assert drop_se("classification", wrong, 0.9) == pytest.approx(accuracy_se(0.9, 100))
    abs_errors = np.array([1.0, 3.0, 5.0, 7.0])
    # relative to the reference MAE, as relative_drop is: doubling it halves the SE
    assert drop_se("regression", abs_errors, -4.0) == pytest.approx(mae_se(abs_errors) / 4.0)
    assert drop_se("regression", abs_errors, -8.0) == pytest.approx(mae_se(abs_errors) / 8.0)


def test_monte_carlo_accuracy_se_is_calibrated() -> None:
    """A quiet batch exceeds 2 SE about 2.5% of the time, not 30%."""
    rng = np.random.default_rng(0)
    n, p = 60, 0.7
    acc = rng.binomial(n, p, size=4000) / n
    alarms = np.mean([(p - a) >= 2 * accuracy_se(a, n) for a in acc])
    assert 0.005 < alarms < 0.06


def test_row_losses_per_task_and_unknown_task() -> None:
    y = pd.Series(["a", "b", "a"])
    assert row_losses("classification", y, np.array(["a", "a", "a"])).tolist() == [0, 1, 0]
    assert row_losses("regression", pd.Series([1.0, 2.0]), np.array([2.0, 0.0])).tolist() == [1, 2]
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        row_losses("ranking", y, np.array(["a"] * 3))


# -- the null-distribution drift rule -------------------------------------------------------


def test_beyond_null_needs_more_than_every_reference_share() -> None:
    null = [0.1, 0.3, 0.2]
    assert beyond_null(0.4, null)
    assert not beyond_null(0.3, null)  # equal to the largest: a quiet batch can do that
    assert not beyond_null(0.1, null)


def test_beyond_null_on_a_stream_whose_batches_always_drift() -> None:
    # every reference batch drifts on 5 of 6 columns against the others: 5/6 is normal
    assert not beyond_null(5 / 6, [5 / 6, 4 / 6, 5 / 6])
    assert beyond_null(1.0, [5 / 6, 4 / 6, 5 / 6])


def test_beyond_null_without_a_null_is_never_drift() -> None:
    assert not beyond_null(1.0, [])
    assert not beyond_null(1.0, [math.nan])
    assert not beyond_null(math.nan, [0.1])


def test_stale_is_a_geometric_schedule() -> None:
    assert not stale(0, 5)  # no model yet: the bootstrap decides
    assert stale(10, 1, growth=0.1) and not stale(11, 1, growth=0.1)
    # refits at 10, 11, 13, 15, ... : their number grows with log(batches), not batches
    refits, seen = 0, 10
    for batch in range(11, 1001):
        if stale(seen, batch - seen, growth=0.1):
            refits, seen = refits + 1, batch
    assert 40 < refits < 60  # log(100) / log(1.1) = 48, where periodic refits 990 times


# -- the paired promotion test --------------------------------------------------------------


def _wrong(rng: np.random.Generator, rate: float, n: int) -> np.ndarray:
    return (rng.random(n) < rate).astype(float)


def test_paired_test_detects_a_planted_accuracy_loss() -> None:
    rng = np.random.default_rng(1)
    champion = _wrong(rng, 0.10, 400)
    candidate = np.maximum(champion, _wrong(rng, 0.15, 400))  # extra mistakes, none fixed
    test = paired_worse("classification", candidate, champion)
    assert test.worse and test.p_value < 1e-6


def test_paired_test_does_not_refuse_an_equal_candidate_on_a_small_holdout() -> None:
    """20-row holdouts, two models of equal skill: refused rarely (about alpha), where a
    fixed tolerance of 0 refuses whenever the candidate happens to be one row behind."""
    rng = np.random.default_rng(2)
    refused = fixed_refused = 0
    trials = 500
    for _ in range(trials):
        champion, candidate = _wrong(rng, 0.3, 20), _wrong(rng, 0.3, 20)
        refused += paired_worse("classification", candidate, champion).worse
        fixed_refused += candidate.mean() > champion.mean()
    assert refused / trials < 0.08
    assert fixed_refused / trials > 0.3  # the control: the old rule decides on noise


def test_paired_test_regression_planted_and_null() -> None:
    rng = np.random.default_rng(3)
    champion = np.abs(rng.standard_t(3, size=200))  # heavy-tailed absolute errors
    worse = paired_worse("regression", champion + 0.5 + 0.1 * rng.random(200), champion)
    assert worse.worse
    same = [paired_worse("regression", np.abs(rng.standard_t(3, size=30)),
                         np.abs(rng.standard_t(3, size=30))).worse for _ in range(300)]
    assert np.mean(same) < 0.1


def test_paired_test_accepts_a_better_candidate() -> None:
    rng = np.random.default_rng(4)
    champion = _wrong(rng, 0.3, 200)
    candidate = champion * _wrong(rng, 0.5, 200)  # fixes half of the champion's mistakes
    assert not paired_worse("classification", candidate, champion).worse


def test_non_finite_candidate_is_never_promoted() -> None:
    champion = np.array([1.0, 2.0, 3.0])
    for bad in (np.nan, np.inf):
        test = paired_worse("regression", np.array([0.0, bad, 0.0]), champion)
        assert test.worse and "non-finite" in test.reason
    # even when its finite rows are far better than the champion's
    assert paired_worse("regression", np.array([0.0] * 99 + [np.nan]), np.ones(100) * 9).worse


def test_paired_test_needs_the_same_rows() -> None:
    with pytest.raises(ValueError, match="same rows"):
        paired_worse("classification", np.zeros(3), np.zeros(4))


# -- the calibrated Gated policy ------------------------------------------------------------


def _obs(drop: float, se: float, share: float = 0.0,
         null: tuple[float, ...] = (0.2, 0.4)) -> Observation:
    return Observation(batch_index=1, drift_share=share, drifted_columns=[], quality_drop=drop,
                       quality_se=se, drift_null_shares=null)


@pytest.mark.parametrize(("drop", "se", "share", "action"), [
    (0.03, 0.02, 0.0, "skip"),  # 1.5 SE on a small batch: noise
    (0.03, 0.01, 0.0, "finetune"),  # 3 SE on a large one: real
    (0.09, 0.02, 0.4, "finetune"),  # 4.5 SE but drift within the null: no retrain
    (0.09, 0.02, 0.6, "retrain"),  # 4.5 SE and drift beyond the reference batches'
    (0.00, 0.02, 0.6, "finetune"),  # drift beyond the null alone: fine-tune
])
def test_gated_defaults_are_in_units_of_noise(drop: float, se: float, share: float,
                                              action: str) -> None:
    decision = Gated(PolicyConfig()).decide(_obs(drop, se, share))
    assert decision.action == action, decision.reason


def test_explicit_thresholds_work_as_before() -> None:
    cfg = PolicyConfig(finetune_quality_drop=0.05, retrain_quality_drop=0.2,
                       finetune_drift_share=0.5, retrain_drift_share=0.5)
    # the SE and null are ignored when every threshold is given
    assert Gated(cfg).decide(_obs(0.03, 0.001, 0.45, null=(0.0,))).action == "skip"
    assert Gated(cfg).decide(_obs(0.25, 1.0, 0.5, null=(0.9,))).action == "retrain"


def test_a_config_setting_some_thresholds_keeps_the_fixed_defaults_for_the_rest() -> None:
    assert PolicyConfig().finetune_drift_share is None  # data-only: calibrated
    partial = PolicyConfig(retrain_quality_drop=0.05, promote_tolerance=0.05)
    assert (partial.finetune_quality_drop, partial.finetune_drift_share,
            partial.retrain_drift_share) == (0.02, 0.5, 0.5)
    assert partial.forgetting_tolerance == 0.05
    assert PolicyConfig(retrain_quality_drop=0.05).promote_tolerance is None  # own group


def test_default_recipes_stop_early_and_explicit_ones_do_not() -> None:
    from greenloop.config import TrainConfig

    assert TrainConfig().retrain.patience is not None
    assert RecipeConfig(epochs=20).patience is None  # an explicit recipe: fixed epochs


def test_early_stopping_stops_before_the_cap_and_keeps_the_best() -> None:
    from greenloop.config import ModelConfig
    from greenloop.data import Schema
    from greenloop.model import TabularModel
    from greenloop.train import fit

    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    frame["y"] = np.where(rng.random(400) < 0.5, "u", "v")  # labels are pure noise
    schema = Schema("y", ("a", "b"), (), ())
    cfg = ModelConfig(hidden=[32])
    epochs: list[int] = []
    for patience in (None, 2):
        model = TabularModel.create(frame, schema, "classification", cfg, seed=0)
        calls = {"n": 0}
        original = model.net.forward

        def counting(x, original=original, calls=calls):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            return original(x)
        model.net.forward = counting  # type: ignore[method-assign]
        fit(model, frame, "y", RecipeConfig(epochs=200, patience=patience), seed=0)
        epochs.append(calls["n"])
    assert epochs[1] < epochs[0] / 4  # noise: the holdout stops it long before 200 epochs


def test_judge_wiring_refuses_only_a_worse_or_broken_candidate() -> None:
    """`steps.refusal` with the default (None) tolerance runs the paired test on the
    models' own predictions: the same model passes, a sabotaged copy does not; a fixed
    tolerance still compares the drop as before."""
    import torch

    from greenloop.config import GreenloopConfig, ModelConfig
    from greenloop.data import Schema
    from greenloop.model import TabularModel
    from greenloop.steps import refusal
    from greenloop.train import fit

    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"a": rng.normal(size=300)})
    frame["y"] = np.where(frame["a"] > 0, "pos", "neg")
    schema = Schema("y", ("a",), (), ())
    champion = TabularModel.create(frame, schema, "classification", ModelConfig(hidden=[8]), 0)
    fit(champion, frame, "y", RecipeConfig(epochs=30, lr=0.01), seed=0)
    cfg = GreenloopConfig.model_validate({"name": "t", "data": {
        "path": "x.csv", "target": "y", "task": "classification", "batch_rows": 10}})
    assert refusal(None, 0.0, champion.copy(), champion, frame, cfg) is None
    flipped = champion.copy()
    with torch.no_grad():
        flipped.net[-1].weight.neg_()
        flipped.net[-1].bias.neg_()
    assert "paired test" in (refusal(None, 0.0, flipped, champion, frame, cfg) or "")
    fixed = refusal(0.05, 0.03, flipped, champion, frame, cfg)
    assert fixed is None  # the fixed rule looks only at the drop it is given


def test_drift_null_stops_at_the_first_reference_share_that_reaches_the_batch() -> None:
    """The null answers one question (is this share above all of them?): a quiet batch
    pays one leave-one-out test, a drifting one all of them, and the answer is the
    full null's either way."""
    import numpy as np
    import pandas as pd

    from greenloop.calibrate import beyond_null
    from greenloop.config import DataConfig, DriftConfig
    from greenloop.data import infer_schema
    from greenloop.steps import _NULL_CACHE, drift_null, make_batch

    rng = np.random.default_rng(3)
    frames = [pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(i % 3, 1, 60),
                            "y": rng.integers(0, 2, 60)}) for i in range(6)]
    schema = infer_schema(pd.concat(frames), DataConfig(path="x.csv", target="y", batch_rows=60,
                                                         task="classification"))
    reference = [make_batch(i, f"{i:064x}", f, 0.2) for i, f in enumerate(frames)]
    cfg = DriftConfig()
    _NULL_CACHE.clear()
    full = drift_null(reference, schema, cfg)
    assert len(full) == 6 and max(full) > 0
    _NULL_CACHE.clear()
    quiet = drift_null(reference, schema, cfg, enough=0.0)
    assert len(quiet) == 1 and quiet == full[:1]  # one test: 0.0 is above none of them
    for share in (0.0, max(full) / 2, max(full), max(full) + 0.01, 1.0):
        _NULL_CACHE.clear()
        partial = drift_null(reference, schema, cfg, enough=share)
        assert partial == full[: len(partial)]
        assert beyond_null(share, partial) == beyond_null(share, full), share
    # resumed from the cache: a later, larger share continues where the quiet one stopped
    _NULL_CACHE.clear()
    drift_null(reference, schema, cfg, enough=0.0)
    assert drift_null(reference, schema, cfg, enough=2.0) == full


def test_a_candidate_that_forgot_is_promoted_only_when_this_batch_says_the_stream_moved() -> None:
    """Champion learned y = sign(a); the candidate learned the flipped concept. On the
    recent batches (the old concept) the candidate forgot. If the new batch follows the
    flipped concept, the champion is significantly worse there and the candidate is
    promoted with the reason; if the new batch follows the old concept, it is refused."""
    from greenloop.config import GreenloopConfig, ModelConfig
    from greenloop.data import Schema
    from greenloop.model import TabularModel
    from greenloop.steps import judge
    from greenloop.train import fit

    rng = np.random.default_rng(8)
    schema = Schema("y", ("a",), (), ())

    def concept(n: int, flipped: bool) -> pd.DataFrame:
        a = rng.normal(size=n)
        return pd.DataFrame({"a": a, "y": np.where((a > 0) != flipped, "pos", "neg")})

    def trained(frame: pd.DataFrame) -> TabularModel:
        model = TabularModel.create(frame, schema, "classification", ModelConfig(hidden=[8]), 0)
        fit(model, frame, "y", RecipeConfig(epochs=30, lr=0.01), seed=0)
        return model

    champion, candidate = trained(concept(300, False)), trained(concept(300, True))
    cfg = GreenloopConfig.model_validate({"name": "t", "data": {
        "path": "x.csv", "target": "y", "task": "classification", "batch_rows": 10}})
    recent_batches = concept(200, False)
    moved = judge(candidate, champion, concept(60, True), recent_batches, cfg)
    assert moved.promote and "the stream has moved" in moved.reason
    stayed = judge(candidate, champion, concept(60, False), recent_batches, cfg)
    assert not stayed.promote  # worse on this batch too: refused before forgetting
    fixed = cfg.model_copy(update={"policy": cfg.policy.model_copy(
        update={"forgetting_tolerance": 0.05, "promote_tolerance": 0.0})})
    assert not judge(candidate, champion, concept(60, True), recent_batches, fixed).promote


def test_finetune_drop_se_sets_how_much_drop_a_fine_tune_waits_for() -> None:
    small = _obs(0.012, 0.01)  # 1.2 SE, no drift: noise by default
    assert Gated(PolicyConfig()).decide(small).action == "skip"
    assert Gated(PolicyConfig(finetune_drop_se=1.0)).decide(small).action == "finetune"
    any_drop = Gated(PolicyConfig(finetune_drop_se=0.0))
    assert any_drop.decide(_obs(0.001, 0.01)).action == "finetune"
    # no drop at all (the champion as good as when promoted) and no drift: still a skip
    assert any_drop.decide(_obs(-0.01, 0.01)).action == "skip"
    # the full retrain keeps its own, higher bar
    assert any_drop.decide(_obs(0.03, 0.01, 0.6)).action == "finetune"
    with pytest.raises(ValueError):
        PolicyConfig(finetune_drop_se=-1.0)
