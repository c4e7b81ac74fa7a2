"""When to train, and on which rows: every policy behind one small interface.

A policy sees an `Observation` of one arrived batch (covariate drift, the champion's
quality drop on it, classes never seen, and the energy actually measured for each
action so far) and returns a `Decision` with a reason a human can read. All policies
share the same two training recipes; they differ only in when they train and on
which rows (`greenloop/steps.py: training_rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

from greenloop.calibrate import RETRAIN_SE, beyond_null, stale
from greenloop.config import PolicyConfig

Action = Literal["skip", "finetune", "retrain"]


@dataclass(frozen=True)
class Observation:
    batch_index: int  # 0 = first batch after the bootstrap
    drift_share: float
    drifted_columns: list[str]
    quality_drop: float  # accuracy points, or relative MAE increase; > 0 means worse
    new_classes: list[str] = field(default_factory=list)
    mean_energy_kwh: dict[str, float] = field(default_factory=dict)  # measured, per action
    mean_gain: dict[str, float] = field(default_factory=dict)  # measured holdout gain per action
    # The stream's own noise (greenloop/calibrate.py), for thresholds left to calibrate:
    # the standard error of `quality_drop` at this batch's size, and the drift shares of
    # the reference batches against each other. NaN / empty: not measured.
    quality_se: float = math.nan
    drift_null_shares: tuple[float, ...] = ()
    # Batches the champion learned from, and batches accepted since (the learning curve).
    seen_batches: int = 0
    unseen_batches: int = 0


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


class Policy(Protocol):
    name: str

    def decide(self, obs: Observation) -> Decision: ...


def _drift_text(obs: Observation) -> str:
    cols = ", ".join(obs.drifted_columns[:5]) + ("…" if len(obs.drifted_columns) > 5 else "")
    return f"drift share {obs.drift_share:.2f}" + (f" ({cols})" if cols else "")


def drift_over(threshold: float | None, obs: Observation) -> tuple[bool, str]:
    """Drift share over a fixed threshold, or (None) beyond the reference batches' own
    batch-to-batch shares; with the text that says which."""
    if threshold is not None:
        return obs.drift_share >= threshold, f"{_drift_text(obs)} vs {threshold}"
    # The null may be partial (greenloop.steps.drift_null stops at the first share that
    # reaches this one): the text says only what holds either way.
    null = max(obs.drift_null_shares, default=math.nan)
    if beyond_null(obs.drift_share, obs.drift_null_shares):
        return True, f"{_drift_text(obs)} above every reference batch's own (max {null:.2f})"
    return False, f"{_drift_text(obs)} within the reference batches' own (up to {null:.2f})"


def drop_over(threshold: float | None, standard_errors: float,
              obs: Observation) -> tuple[bool, str]:
    """Quality drop over a fixed threshold, or (None) over `standard_errors` standard
    errors of the batch metric at this batch's size."""
    drop = obs.quality_drop
    if threshold is not None:
        return drop >= threshold, f"quality drop {drop:.3f} vs {threshold}"
    limit = standard_errors * obs.quality_se
    return drop >= limit, (f"quality drop {drop:.3f} vs {standard_errors:g} SE "
                           f"= {limit:.3f}")


@dataclass(frozen=True)
class Gated:
    """Skip / fine-tune / retrain by thresholds; a retrain needs drift over its threshold.
    A threshold left None is calibrated on the stream (`drift_over`, `drop_over`)."""

    cfg: PolicyConfig
    name: str = "gated"

    def decide(self, obs: Observation) -> Decision:
        c = self.cfg
        retrain_drift, drift_text = drift_over(c.retrain_drift_share, obs)
        retrain_drop, drop_text = drop_over(c.retrain_quality_drop, RETRAIN_SE, obs)
        if retrain_drift and retrain_drop:
            return Decision("retrain", f"{drift_text} and {drop_text}: both over")
        if c.retrain_quality_drop is None and stale(obs.seen_batches, obs.unseen_batches):
            return Decision("retrain", f"{obs.unseen_batches} batch(es) not learned from, "
                                       f"{obs.seen_batches} learned: the history has grown")
        if obs.new_classes:
            return Decision("finetune", f"new class(es) {', '.join(obs.new_classes)}")
        finetune_drop, drop_text = drop_over(c.finetune_quality_drop, c.finetune_drop_se, obs)
        if finetune_drop:
            return Decision("finetune", f"{drop_text}: over")
        finetune_drift, drift_text = drift_over(c.finetune_drift_share, obs)
        if finetune_drift:
            return Decision("finetune", f"{drift_text}: over")
        return Decision("skip", f"{drift_text} and {drop_text}: below")


@dataclass(frozen=True)
class Periodic:
    """A scheduled pipeline: full retrain every `periodic_every` batches, drift or not."""

    cfg: PolicyConfig
    name: str = "periodic"

    def decide(self, obs: Observation) -> Decision:
        k = self.cfg.periodic_every
        if obs.batch_index % k == 0:
            return Decision("retrain", f"scheduled full retrain (every {k} batch(es))")
        return Decision("skip", f"not a scheduled batch (every {k})")


@dataclass(frozen=True)
class DriftRetrain:
    """Full retrain when data drift crosses the threshold, else skip."""

    cfg: PolicyConfig
    name: str = "drift-retrain"

    def decide(self, obs: Observation) -> Decision:
        drifted, text = drift_over(self.cfg.retrain_drift_share, obs)
        if drifted or obs.new_classes:
            return Decision("retrain", f"{text}: over")
        return Decision("skip", f"{text}: below")


@dataclass(frozen=True)
class AlwaysFinetune:
    cfg: PolicyConfig
    name: str = "finetune"

    def decide(self, obs: Observation) -> Decision:
        return Decision("finetune", "fine-tune on every batch")


@dataclass(frozen=True)
class Never:
    cfg: PolicyConfig
    name: str = "never"

    def decide(self, obs: Observation) -> Decision:
        return Decision("skip", "bootstrap model only; never updated")


@dataclass(frozen=True)
class CostAware:
    """Best expected quality gain per unit of measured energy.

    value(a) = expected_gain(a) - energy_kwh(a) / points_per_kwh, with
    expected_gain(a) = min(quality drop, mean holdout gain measured for a so far)
    and energy_kwh(a) the mean energy measured for a so far (the ledger, not a model).
    Until an action has been measured, the gated rule decides (that is how it gets
    measured). Skip has value 0: no gain, and its energy is spent whatever we choose.
    """

    cfg: PolicyConfig
    name: str = "cost-aware"

    def decide(self, obs: Observation) -> Decision:
        fallback = Gated(self.cfg).decide(obs)
        if obs.new_classes or any(a not in obs.mean_energy_kwh for a in ("finetune", "retrain")):
            return Decision(fallback.action, f"{fallback.reason} (cost not yet measured)")
        drop = max(obs.quality_drop, 0.0)
        values: dict[Action, float] = {"skip": 0.0}
        for a in ("finetune", "retrain"):
            if a == "retrain" and not drift_over(self.cfg.retrain_drift_share, obs)[0]:
                continue  # a full retrain only when drift crosses its threshold
            gain = min(drop, max(obs.mean_gain.get(a, drop), 0.0))
            values[a] = gain - obs.mean_energy_kwh[a] / self.cfg.points_per_kwh
        best = max(values, key=lambda a: values[a])
        terms = ", ".join(f"{a} {v:+.4f}" for a, v in values.items())
        return Decision(best, f"best value per kWh at {self.cfg.points_per_kwh:g} pts/kWh: {terms}")


# -- the periodic baseline family -------------------------------------------------------
# A user choosing a schedule would try cadences and windows: `compare` searches this family
# (issue 10) instead of one all-history schedule. A variant is periodic with two knobs set.
PERIODIC_EVERY = (1, 2, 4, 8)  # retrain every N batches
PERIODIC_WINDOWS: tuple[int | None, ...] = (None, 4, 8, 16)  # None = all history
ALL_HISTORY = "periodic-e1-wall"  # every batch on all history: the classic baseline
# No model at all: each batch predicted by the previous batch's majority class or mean
# (greenloop/compare.py: naive_prequential). Quality only; it never trains.
NAIVE = "naive"


def variant_name(every: int, window: int | None) -> str:
    return f"periodic-e{every}-w{'all' if window is None else window}"


def periodic_variants() -> dict[str, tuple[int, int | None]]:
    """Every variant of the family: name -> (periodic_every, periodic_window_batches)."""
    return {variant_name(e, w): (e, w) for e in PERIODIC_EVERY for w in PERIODIC_WINDOWS}


def parse_variant(name: str) -> tuple[int, int | None]:
    """`periodic-e4-w8` -> (4, 8); `periodic-e2-wall` -> (2, None). Any cadence or window
    may be named, not only the family's."""
    parts = name.split("-")
    try:
        if len(parts) != 3 or parts[0] != "periodic" or parts[1][0] != "e" or parts[2][0] != "w":
            raise ValueError
        every = int(parts[1][1:])
        window = None if parts[2] == "wall" else int(parts[2][1:])
    except (ValueError, IndexError):
        raise ValueError(f"not a periodic variant name: {name!r} (expected periodic-e<N>-w<M> "
                         "or periodic-e<N>-wall)") from None
    if every < 1 or (window is not None and window < 1):
        raise ValueError(f"{name!r}: cadence and window must be positive")
    return every, window


POLICIES = {"gated": Gated, "periodic": Periodic, "drift-retrain": DriftRetrain,
            "finetune": AlwaysFinetune, "never": Never, "cost-aware": CostAware}


def make_policy(cfg: PolicyConfig) -> Policy:
    try:
        return POLICIES[cfg.name](cfg)
    except KeyError:
        raise ValueError(f"unknown policy {cfg.name!r}; choose from {sorted(POLICIES)}") from None
