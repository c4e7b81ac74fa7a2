"""The one per-batch algorithm: observe -> drift -> decide -> training rows -> candidate ->
verdict, as a single pure function.

Every caller runs a batch through `step`: the served and replayed `update` flow (with the
ledger, CodeCarbon and MLflow at its edges), `benchmarks/simulate.py`, `greenloop tune` and
the baseline screening of `compare` (with nothing at the edges). What differs between them
is only what they pass in: the batch and its history, the state of the champion, and the
edges (a meter per phase, a gate on the decision). The outcome is plain data; recording
it (ledger, MLflow, DVC) is the caller's business, after the step.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from greenloop.config import GreenloopConfig
from greenloop.data import Schema
from greenloop.drift import DriftResult
from greenloop.evaluate import relative_drop
from greenloop.model import TabularModel
from greenloop.policy import Decision, Observation, Policy
from greenloop.steps import (
    Batch,
    Verdict,
    concat,
    drift_null,
    judge,
    observe,
    quality_se,
    reference_drift,
)
from greenloop.window import after_refusals, train_for


@dataclass(frozen=True)
class Champion:
    """The model in service as the step needs to know it (None fields: no model yet)."""

    version: int | None = None
    model: TabularModel | None = None
    reference_quality: float | None = None  # its quality when it was promoted
    trained_through: int | None = None  # the last batch seq it was trained on


@dataclass(frozen=True)
class StepInput:
    batch: Batch
    history: Sequence[Batch]  # accepted batches before this one, oldest first (by seq)
    champion: Champion
    update_index: int  # 0 = the first batch after the bootstrap (periodic's cadence)
    mean_energy_kwh: dict[str, float] = field(default_factory=dict)  # measured, per action
    mean_gain: dict[str, float] = field(default_factory=dict)  # measured, per action
    force: str | None = None  # a reason: a forced full retrain (scheduled `full-retrain`)
    # Full retrains since the bootstrap whose candidate was not promoted: which window
    # the next one uses (greenloop/window.py: after_refusals). Asked only when a full
    # retrain is about to train, so a skip never pays the ledger query behind it.
    refused_retrains: Callable[[], int] = lambda: 0


@dataclass(frozen=True)
class StepOutcome:
    quality_before: float  # the champion on the batch before learning from it (NaN: none)
    drift: DriftResult | None
    decision: Decision
    reference: list[Batch]  # the champion's reference window (drift and forgetting)
    train_rows: int = 0
    train_row_epochs: int = 0  # rows × epochs early stopping ran, every model trained
    candidate: TabularModel | None = None
    verdict: Verdict | None = None

    @property
    def bootstrap(self) -> bool:
        return self.drift is None


Phase = Callable[[str, str | None], AbstractContextManager[object]]
Gate = Callable[[Decision, DriftResult | None], Decision]


@contextmanager
def _unmetered(name: str, action: str | None) -> Iterator[None]:
    yield


def _no_gate(decision: Decision, drift: DriftResult | None) -> Decision:
    return decision


@dataclass(frozen=True)
class Edges:
    """What the caller plugs in. `phase(name, action)` wraps each metered part
    (`observe` and the verdict are metered as `evaluate`; `drift`; `train`, with the
    action decided); `gate` may replace a decision (the carbon window defers retrains)."""

    phase: Phase = _unmetered
    gate: Gate = _no_gate


NO_EDGES = Edges()


def reference_window(inp: StepInput, cfg: GreenloopConfig) -> list[Batch]:
    """The last `reference_batches` batches the champion had seen when it was trained."""
    through = inp.champion.trained_through
    if through is None:
        through = inp.batch.seq - 1
    seen = seen_through(inp.history, through)
    return list(inp.history[max(seen - cfg.drift.reference_batches, 0):seen])


def seen_through(history: Sequence[Batch], through: int | None) -> int:
    """How many batches of `history` (oldest first: ascending seqs) have seq <= `through`.
    A binary search: every batch asks, and a served model's history grows without end."""
    if through is None:
        return 0
    return bisect_right(history, through, key=lambda b: b.seq)


def bootstrap_decision(inp: StepInput, cfg: GreenloopConfig) -> Decision:
    """No champion yet: collect `bootstrap_batches` batches, then train the first model."""
    have, need = len(inp.history) + 1, cfg.data.bootstrap_batches
    if have < need:
        return Decision("skip", f"bootstrap: {have} of {need} batches collected")
    return Decision("retrain", f"bootstrap: first model on {have} batches")


def labelled_rows(batch: Batch, cfg: GreenloopConfig) -> int:
    return int(batch.frame[cfg.data.target].count())  # the non-missing labels


def new_classes(champion: TabularModel | None, batch: Batch, cfg: GreenloopConfig) -> list[str]:
    if champion is None or cfg.data.task != "classification":
        return []
    labels = batch.frame[cfg.data.target].dropna().unique()  # a few: text per class, not row
    return sorted({str(v) for v in labels} - set(champion.pre.classes))


def step(inp: StepInput, cfg: GreenloopConfig, schema: Schema, policy: Policy,
         edges: Edges = NO_EDGES) -> StepOutcome:
    champion = inp.champion.model
    quality_before, drift, reference = math.nan, None, []
    if champion is not None:
        with edges.phase("observe", None):  # test, then train: before anything learns
            quality_before, losses = observe(champion, inp.batch.frame, cfg.data.target)
            se = quality_se(champion.pre.task, losses, _reference_quality(inp, quality_before))
        with edges.phase("drift", None):
            reference = reference_window(inp, cfg)
            drift = reference_drift(reference, inp.batch.frame, schema, cfg.drift)
            null = _drift_null_if_calibrating(policy, reference, schema, cfg, drift.share)
        decision = _decide(inp, cfg, policy, quality_before, drift, se, null)
    else:
        decision = bootstrap_decision(inp, cfg)
    if champion is not None and not labelled_rows(inp.batch, cfg):
        decision = Decision("skip", "no labelled rows: drift and predictions only")
    elif inp.force and champion is not None:
        decision = Decision("retrain", f"{inp.force}; policy said: {decision.action} "
                                       f"({decision.reason})")
    elif champion is not None:
        decision = edges.gate(decision, drift)
    if decision.action == "skip":
        return StepOutcome(quality_before, drift, decision, reference)
    seed = cfg.model.seed + inp.batch.seq
    train_cfg = cfg if champion is None else after_refusals(decision.action, cfg,
                                                            inp.refused_retrains())
    with edges.phase("train", decision.action):
        trained = train_for(decision.action, champion, inp.batch, inp.history, schema,
                            train_cfg, seed)
    if train_cfg is not cfg:
        decision = Decision(decision.action, f"{decision.reason}; on the last "
                            f"{train_cfg.train.retrain_window_batches} batches: the last "
                            f"full retrain on all history was refused")
    if trained.note:
        decision = Decision(decision.action, f"{decision.reason}; {trained.note}")
    with edges.phase("evaluate", decision.action):
        window = reference or inp.history[-cfg.drift.reference_batches:]
        if cfg.policy.forgetting_tolerance is None:
            # The calibrated forgetting check asks about the recent past, not the
            # champion's window: after a concept change that window would refuse every
            # candidate that adapted, and stay the champion's for ever.
            window = inp.history[-cfg.drift.reference_batches:]
        verdict = judge(trained.candidate, champion, inp.batch.holdout,
                        concat([b.holdout for b in window]), cfg)
    return StepOutcome(quality_before, drift, decision, reference, trained.rows,
                       trained.row_epochs, trained.candidate, verdict)


def _reference_quality(inp: StepInput, quality_before: float) -> float:
    reference_quality = inp.champion.reference_quality
    if reference_quality is None or math.isnan(reference_quality):
        return quality_before
    return reference_quality


def _drift_null_if_calibrating(policy: Policy, reference: list[Batch], schema: Schema,
                               cfg: GreenloopConfig, share: float) -> tuple[float, ...]:
    """The reference batches' drift shares against each other (the stream's own
    batch-to-batch drift), when a policy that reads drift has a threshold to calibrate;
    only as many as it takes to tell whether `share` is above them all."""
    p = cfg.policy
    if policy.name in ("gated", "drift-retrain", "cost-aware") and (
            p.finetune_drift_share is None or p.retrain_drift_share is None):
        return drift_null(reference, schema, cfg.drift, enough=share)
    return ()


def _decide(inp: StepInput, cfg: GreenloopConfig, policy: Policy, quality_before: float,
            drift: DriftResult, se: float, null: tuple[float, ...]) -> Decision:
    # `se` and `null`: the stream's own noise, for thresholds left to calibrate.
    reference_quality = _reference_quality(inp, quality_before)
    through = inp.champion.trained_through
    seen = seen_through(inp.history, through)
    obs = Observation(
        batch_index=inp.update_index, drift_share=drift.share, drifted_columns=drift.drifted,
        quality_drop=relative_drop(cfg.data.task, reference_quality, quality_before),
        new_classes=new_classes(inp.champion.model, inp.batch, cfg),
        mean_energy_kwh=inp.mean_energy_kwh, mean_gain=inp.mean_gain,
        quality_se=se, drift_null_shares=null, seen_batches=seen,
        unseen_batches=len(inp.history) + 1 - seen)
    return policy.decide(obs)


def advance(champion: Champion, inp: StepInput, out: StepOutcome,
            version: int | None = None) -> Champion:
    """The champion after a step, for callers that keep it in memory (simulate, tune):
    a promoted candidate becomes the champion, trained through this batch."""
    if out.candidate is None or out.verdict is None or not out.verdict.promote:
        return champion
    number = version if version is not None else (champion.version or 0) + 1
    return Champion(number, out.candidate, out.verdict.eval_quality, inp.batch.seq)


__all__ = ["NO_EDGES", "Champion", "Edges", "StepInput", "StepOutcome", "advance",
           "bootstrap_decision", "labelled_rows", "new_classes", "reference_window", "step"]
