"""When to train, and on which rows: every policy behind one small interface.

A policy sees an `Observation` of one arrived batch (covariate drift, the champion's
quality drop on it, classes never seen, and the energy actually measured for each
action so far) and returns a `Decision` with a reason a human can read. All policies
share the same two training recipes; they differ only in when they train and on
which rows (`greenloop/steps.py: training_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

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


@dataclass(frozen=True)
class Gated:
    """Skip / fine-tune / retrain by thresholds; a retrain needs drift over its threshold."""

    cfg: PolicyConfig
    name: str = "gated"

    def decide(self, obs: Observation) -> Decision:
        c, drop = self.cfg, obs.quality_drop
        if obs.drift_share >= c.retrain_drift_share and drop >= c.retrain_quality_drop:
            return Decision("retrain", f"{_drift_text(obs)} ≥ {c.retrain_drift_share} and "
                                       f"quality drop {drop:.3f} ≥ {c.retrain_quality_drop}")
        if obs.new_classes:
            return Decision("finetune", f"new class(es) {', '.join(obs.new_classes)}")
        if drop >= c.finetune_quality_drop:
            return Decision("finetune", f"quality drop {drop:.3f} ≥ {c.finetune_quality_drop}")
        if obs.drift_share >= c.finetune_drift_share:
            return Decision("finetune", f"{_drift_text(obs)} ≥ {c.finetune_drift_share}")
        return Decision("skip", f"{_drift_text(obs)} and quality drop {drop:.3f} below thresholds")


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
        if obs.drift_share >= self.cfg.retrain_drift_share or obs.new_classes:
            return Decision("retrain", f"{_drift_text(obs)} ≥ {self.cfg.retrain_drift_share}")
        return Decision("skip", f"{_drift_text(obs)} < {self.cfg.retrain_drift_share}")


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
            if a == "retrain" and obs.drift_share < self.cfg.retrain_drift_share:
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
