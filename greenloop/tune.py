"""Screening and tuning through the one per-batch step, in memory (no energy measured).

`screen` runs a stream through `simulate` under one policy setting and keeps its quality
and a deterministic training cost (rows trained × the epochs early stopping ran).
`compare` screens the periodic family with it before metering; `tune_stream` chooses
knobs on a prefix of the stream only — it reads batches 1..K and never one after
(tests/unit/test_tune.py proves it), so what `compare --from-batch K+1` reports was never
seen while tuning.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from greenloop.calibrate import FINETUNE_SE
from greenloop.compare import better, cheapest_within, within_tolerance
from greenloop.config import GreenloopConfig, PolicyConfig, TrainConfig
from greenloop.data import Schema, infer_schema, read_table, split_stream, validate_batch
from greenloop.policy import parse_variant, periodic_variants
from greenloop.simulate import simulate
from greenloop.step import StepInput, StepOutcome
from greenloop.steps import Batch, make_batch

# Gated's knobs searched by `tune`: 27 points, of which `budget` are run (as many as the
# periodic variants run, so neither side gets more searching than the other).
GATED_GRID: dict[str, tuple[float, ...]] = {
    "finetune_quality_drop": (0.01, 0.02, 0.05),
    "retrain_quality_drop": (0.05, 0.10, 0.20),
    "finetune_drift_share": (0.3, 0.5, 0.8),
}
TUNABLE = ("gated", "cost-aware")  # the policies whose decisions these knobs drive


@dataclass(frozen=True)
class Screened:
    name: str
    quality: float  # prequential metric over update batches with seq >= from_seq
    # Rows trained on × the epochs early stopping ran, summed (deterministic). Costing by
    # the recipe's epoch cap instead ranked settings whose trainings stop early (large
    # windows, warm starts) as dearer than they are.
    train_row_epochs: int
    train_cpu_seconds: float  # measured in this process; noisy, reported only
    decisions: dict[str, int]
    knobs: dict[str, Any] = field(default_factory=dict)
    # Quality over the first and the second half of the scored batches (Simulation.halves).
    halves: tuple[float, float] = (math.nan, math.nan)

    def as_dict(self) -> dict[str, Any]:
        return {"quality": self.quality, "train_row_epochs": self.train_row_epochs,
                "train_cpu_seconds": round(self.train_cpu_seconds, 2),
                "decisions": self.decisions, "knobs": self.knobs,
                "halves": list(self.halves)}


# Knobs of the train section a policy setting may carry (the rest are policy knobs).
TRAIN_KNOBS = ("retrain_window_batches",)


def with_knobs(cfg: GreenloopConfig, **knobs: Any) -> GreenloopConfig:
    """The config with policy knobs (and `TRAIN_KNOBS`) replaced, validated like a file."""
    train_knobs = {k: knobs.pop(k) for k in TRAIN_KNOBS if k in knobs}
    policy = PolicyConfig.model_validate({**cfg.policy.model_dump(), **knobs})
    update: dict[str, Any] = {"policy": policy}
    if train_knobs:
        update["train"] = TrainConfig.model_validate({**cfg.train.model_dump(), **train_knobs})
    return cfg.model_copy(update=update)


def variant_knobs(name: str) -> dict[str, Any]:
    every, window = parse_variant(name)
    return {"name": "periodic", "periodic_every": every, "periodic_window_batches": window}


def screen(cfg: GreenloopConfig, batches: Sequence[Batch], schema: Schema, name: str,
           from_seq: int = 0) -> Screened:
    """One run of the stream through `simulate` with `cfg`'s policy."""
    row_epochs = 0

    def count(inp: StepInput, out: StepOutcome) -> None:
        nonlocal row_epochs
        if inp.batch.seq >= from_seq:
            row_epochs += out.train_row_epochs

    sim = simulate(cfg, list(batches), schema, on_step=count)
    return Screened(name, sim.prequential(from_seq), row_epochs, sim.train_cpu(),
                    sim.decisions(from_seq), halves=sim.halves(from_seq))


def screen_variants(cfg: GreenloopConfig, batches: Sequence[Batch], schema: Schema,
                    names: Iterable[str], from_seq: int = 0) -> dict[str, Screened]:
    out = {}
    for name in names:
        knobs = variant_knobs(name)
        out[name] = replace(screen(with_knobs(cfg, **knobs), batches, schema, name, from_seq),
                            knobs=knobs)
    return out


def spread_pick(items: Sequence[Any], budget: int) -> list[Any]:
    """`budget` items evenly spread over `items` (all of them if budget >= len)."""
    if budget >= len(items):
        return list(items)
    step = (len(items) - 1) / max(budget - 1, 1)
    return [items[round(i * step)] for i in range(budget)]


# The full-retrain window a policy setting may use: all history (the default), the race
# of all history against the last 8 ("auto"), or the last 16 / 8 batches — what
# periodic's window search gets, the policy gets too.
RETRAIN_WINDOWS: tuple[int | str | None, ...] = (None, "auto", 16, 8)
# How much of a quality drop, in standard errors, a fine-tune waits for: the default (2),
# or any drop at all (0). Fine-tunes are cheap, and a promoted one is also learning the
# stream: on a stream that moves a little every batch it replaces full retrains.
FINETUNE_DROP_SES: tuple[float, ...] = (FINETUNE_SE, 0.0)


def calibrated_points() -> list[dict[str, Any]]:
    """The self-calibrating defaults (no threshold set: the stream's own noise units),
    with each retrain window and fine-tune threshold; the first is the data-only default
    itself."""
    points = []
    for se in FINETUNE_DROP_SES:
        for w in RETRAIN_WINDOWS:
            point: dict[str, Any] = {} if w is None else {"retrain_window_batches": w}
            if se != FINETUNE_DROP_SES[0]:
                point["finetune_drop_se"] = se
            points.append(point)
    return points


def gated_grid() -> list[dict[str, Any]]:
    """The self-calibrating defaults first, then the fixed-threshold grid."""
    keys = list(GATED_GRID)
    points: list[dict[str, Any]] = [{}]
    for k in keys:
        points = [{**p, k: v} for p in points for v in GATED_GRID[k]]
    return [*calibrated_points(), *points]


def policy_points(budget: int) -> list[dict[str, Any]]:
    """`budget` settings: the calibrated ones always, the fixed grid spread over the rest."""
    calibrated = calibrated_points()
    fixed = gated_grid()[len(calibrated):]
    return calibrated[:budget] + spread_pick(fixed, max(budget - len(calibrated), 0))


# Below this rank correlation the prefix's two halves disagree on which schedules are good:
# a choice made on the whole prefix is then a weak guide to the rest of the stream.
STABLE_SPEARMAN = 0.5


def prefix_stability(runs: dict[str, Screened]) -> float:
    """Spearman rank correlation, over the screened variants, between their quality on
    the first and on the second half of the prefix (ties share their mean rank). It is
    computed from the prefix alone and costs no extra run; NaN with fewer than 4
    variants scored on both halves."""
    pairs = [r.halves for r in runs.values()
             if not (math.isnan(r.halves[0]) or math.isnan(r.halves[1]))]
    if len(pairs) < 4:
        return math.nan
    first = pd.Series([a for a, _ in pairs]).rank()
    second = pd.Series([b for _, b in pairs]).rank()
    if first.nunique() < 2 or second.nunique() < 2:
        return math.nan  # every variant alike on one half: no ranking to compare
    return float(first.corr(second))


def stability_text(stability: float) -> str:
    """One line for the tuned config's header and the CLI."""
    if math.isnan(stability):
        return "prefix stability: not measured (too few variants or scored batches)"
    verdict = ("they rank alike: the choice should carry over" if stability >= STABLE_SPEARMAN
               else "they rank differently: a choice made here may not hold on the rest")
    return (f"prefix stability: Spearman {stability:+.2f} between the periodic variants' "
            f"quality on the prefix's two halves; {verdict}")


def prefix_separates(task: str, runs: dict[str, Screened]) -> bool:
    """Does the prefix tell the periodic variants apart: is at least one of them outside
    tolerance of the best? When none is (a short or noiseless prefix: STAGGER's first
    rule scores 100% under every schedule), every family's pick is simply its cheapest
    setting, by default rather than on evidence."""
    scored = [r.quality for r in runs.values() if not math.isnan(r.quality)]
    if len(scored) < 2:
        return False
    best = max(scored) if task == "classification" else min(scored)
    return any(not within_tolerance(task, q, best) for q in scored)


def separation_text(separates: bool, variants: int) -> str:
    """One line for the tuned config's header and the CLI."""
    if separates:
        return (f"prefix separation: the prefix tells the {variants} periodic variants apart "
                f"(some are outside tolerance of the best)")
    return (f"prefix separation: NONE: all {variants} periodic variants are within tolerance "
            f"of the best on the prefix, so each pick is simply the cheapest setting; tune "
            f"on a longer prefix (--prefix) or check with compare before relying on it")


def prefix_length(n_batches: int, prefix: float) -> int:
    if not 0 < prefix < 1:
        raise ValueError(f"prefix must be a fraction between 0 and 1 (exclusive), got {prefix}")
    return math.ceil(prefix * n_batches)


@dataclass
class TuneResult:
    prefix: float
    prefix_batches: int  # K: batches 1..K were read
    total_batches: int
    task: str
    policy: str
    budget: int
    best_periodic: str
    periodic: str  # the cheapest periodic variant within tolerance of the best one
    chosen: dict[str, Any]  # the tuned policy's knobs
    chosen_within: bool  # within tolerance of the best periodic on the prefix
    periodic_runs: dict[str, Screened]
    policy_runs: dict[str, Screened]
    stability: float = math.nan  # prefix_stability over the periodic variants
    separates: bool = True  # prefix_separates over the periodic variants

    def knobs(self) -> dict[str, Any]:
        """What `tune` writes into the config's policy section."""
        p = self.periodic_runs[self.periodic].knobs
        return {**self.chosen, "periodic_every": p["periodic_every"],
                "periodic_window_batches": p["periodic_window_batches"]}

    def as_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "prefix_batches": self.prefix_batches,
                "total_batches": self.total_batches, "policy": self.policy,
                "budget": self.budget, "best_periodic": self.best_periodic,
                "periodic": self.periodic, "chosen": self.chosen,
                "chosen_within_tolerance": self.chosen_within, "knobs": self.knobs(),
                "prefix_stability": self.stability, "prefix_separates": self.separates,
                "periodic_runs": {k: v.as_dict() for k, v in self.periodic_runs.items()},
                "policy_runs": {k: v.as_dict() for k, v in self.policy_runs.items()}}


def _best(task: str, runs: dict[str, Screened]) -> str:
    best = None
    for name in sorted(runs, key=lambda n: runs[n].train_row_epochs):
        q = runs[name].quality
        if not math.isnan(q) and (best is None or better(task, q, runs[best].quality)):
            best = name
    if best is None:
        raise ValueError("no screened run scored any batch of the prefix: make the prefix "
                         "longer than the bootstrap")
    return best


def _untracked(items: Sequence[Any], label: str) -> Iterable[Any]:
    return items


Track = Callable[[Sequence[Any], str], Iterable[Any]]


def tune_stream(cfg: GreenloopConfig, batches: Sequence[Batch], schema: Schema, prefix: float,
                budget: int = 16, total_batches: int | None = None,
                track: Track = _untracked) -> TuneResult:
    """Choose the policy's knobs and periodic's cadence/window on batches 1..K only,
    K = ceil(prefix × n), n = total_batches or len(batches) (`load_prefix` hands over the
    prefix alone and the total); batch K+1 and later are never read. Each family gets
    the same number of simulate runs (min(budget, 16)). The policy's pick is the cheapest
    setting (training row-epochs) within tolerance of the best periodic variant. `track`
    wraps each family's runs (the CLI's progress bar)."""
    if cfg.policy.name not in TUNABLE:
        raise ValueError(f"tune chooses the knobs of {' or '.join(TUNABLE)}; the config's "
                         f"policy is {cfg.policy.name!r}")
    if budget < 1:
        raise ValueError(f"budget must be at least 1 simulate run, got {budget}")
    n = len(batches) if total_batches is None else total_batches
    k = prefix_length(n, prefix)
    if len(batches) < k:
        raise ValueError(f"the prefix needs batches 1..{k} of {n}; only {len(batches)} given")
    if k < cfg.data.bootstrap_batches + 2:
        raise ValueError(f"prefix {prefix} of {n} batches is {k} batch(es): tuning needs the "
                         f"{cfg.data.bootstrap_batches} bootstrap batches and at least two more")
    seen = [batches[i] for i in range(k)]  # the only batches read: 1..K
    per_family = min(budget, len(periodic_variants()))
    names = spread_pick(list(periodic_variants()), per_family)
    periodic_runs = screen_variants(cfg, seen, schema,
                                    track(names, f"{cfg.name} · periodic variants on the prefix"))
    task = cfg.data.task
    best = _best(task, periodic_runs)
    costs = {n_: (r.quality, float(r.train_row_epochs)) for n_, r in periodic_runs.items()}
    periodic = cheapest_within(task, periodic_runs[best].quality, costs) or best
    policy_runs: dict[str, Screened] = {}
    for point in track(policy_points(per_family), f"{cfg.name} · {cfg.policy.name} settings"):
        label = ",".join(f"{k_}={v}" for k_, v in point.items()) or "calibrated defaults"
        policy_runs[label] = replace(screen(with_knobs(cfg, **point), seen, schema, label),
                                     knobs=point)
    costs = {n_: (r.quality, float(r.train_row_epochs)) for n_, r in policy_runs.items()}
    pick = cheapest_within(task, periodic_runs[best].quality, costs)
    within = pick is not None
    pick = pick or _best(task, policy_runs)
    return TuneResult(prefix, k, n, task, cfg.policy.name, per_family, best, periodic,
                      dict(policy_runs[pick].knobs), within, periodic_runs, policy_runs,
                      prefix_stability(periodic_runs), prefix_separates(task, periodic_runs))


def load_prefix(cfg: GreenloopConfig, source_path: Path, prefix: float
                ) -> tuple[list[Batch], Schema, int]:
    """Batches 1..K of the source, cut as the pipeline cuts them (same hashes and holdout
    rows), with the schema inferred from those rows only; also returns the total count.
    Later batches are counted, never validated, looked into or returned."""
    parts = list(split_stream(read_table(source_path), cfg.data))
    k = prefix_length(len(parts), prefix)
    # Column types as the prefix alone gives them: the whole table was read at once, so a
    # text value after the prefix would make a numeric column text here too.
    text = pd.concat(parts[:k], ignore_index=True).to_csv(index=False)
    schema = infer_schema(pd.read_csv(io.StringIO(text)), cfg.data)
    batches = []
    for i, part in enumerate(parts[:k]):
        frame = validate_batch(part, schema, cfg.data)
        digest = hashlib.sha256(part.to_csv(index=False).encode()).hexdigest()
        batches.append(make_batch(i + 1, digest, frame, cfg.train.holdout_fraction))
    return batches, schema, len(parts)


def tuned_yaml(original: str, result: TuneResult) -> str:
    """The config with the tuned knobs in its policy section, under a header naming the
    prefix. The original's leading comment block is kept; comments inside are lost
    (PyYAML does not keep them)."""
    raw = yaml.safe_load(original)
    if not isinstance(raw, dict):
        raise ValueError("expected a mapping at the top level of the config")
    knobs = result.knobs()
    for key in TRAIN_KNOBS:
        if key in knobs:
            raw.setdefault("train", {})[key] = knobs.pop(key)
    raw.setdefault("policy", {}).update(knobs)
    raw["policy"]["name"] = result.policy
    best = result.periodic_runs[result.best_periodic]
    header = [
        f"# tuned by greenloop tune on batches 1..{result.prefix_batches} (prefix "
        f"{result.prefix:g}) of {result.total_batches}",
        f"# {result.policy}: the cheapest of {len(result.policy_runs)} settings (training "
        f"row-epochs) {'within' if result.chosen_within else 'NOT within (best quality)'} "
        f"tolerance of the best of {len(result.periodic_runs)} periodic variants, "
        f"{result.best_periodic} ({best.quality:.4f} on the prefix)",
        f"# periodic: {result.periodic}, the cheapest variant within tolerance of the best",
        f"# {stability_text(result.stability)}",
        f"# {separation_text(result.separates, len(result.periodic_runs))}",
    ]
    leading = []
    for line in original.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith(("# tuned by greenloop tune", "# prefix stability:",
                                "# prefix separation:")) \
                and line not in header:
            leading.append(line)
    return "\n".join(header + leading) + "\n" + yaml.safe_dump(raw, sort_keys=False)


__all__ = ["GATED_GRID", "RETRAIN_WINDOWS", "STABLE_SPEARMAN", "TRAIN_KNOBS", "Screened",
           "TuneResult", "calibrated_points", "gated_grid", "load_prefix", "policy_points",
           "prefix_length", "prefix_separates", "prefix_stability", "screen", "screen_variants",
           "separation_text", "spread_pick", "stability_text", "tune_stream", "tuned_yaml",
           "variant_knobs", "with_knobs"]
