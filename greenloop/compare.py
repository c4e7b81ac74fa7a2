"""Policies side by side: ratios against a baseline and per-batch curves, from measured data.

Pure functions on run summaries (`summary.json`) and ledger rows. Nothing here models
energy: every kWh figure is a sum of CodeCarbon readings the pipeline recorded.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from greenloop.energy import PHASES
from greenloop.ledger import BatchRow
from greenloop.policy import ALL_HISTORY

# The ratios' baseline: periodic retraining on all history every batch. The headline is
# the iso-quality ratio against the cheapest variant of the family (`iso_quality`).
BASELINE = ALL_HISTORY
DEFAULT_POLICIES = ("gated", "cost-aware", "drift-retrain", "finetune", "never")
# Which periodic variants `compare` replays whole after screening them all.
# none: only all history every batch (no iso-quality unless it qualifies).
BASELINE_CHOICES = ("frontier", "iso", "all", "none")
RATIO_KEYS = ("energy_total", "energy_train", "cpu_seconds", "wall_seconds", "quality_delta",
              "quality_relative")


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def overhead_share(summary: dict[str, Any]) -> float:
    """Share of the whole run's measured energy spent outside training."""
    e = summary["energy_kwh"]
    return 1.0 - _div(e.get("train", 0.0), e["total"])


def seconds_per_batch(summary: dict[str, Any]) -> float:
    return _div(summary["wall_seconds"], summary["batches"])


def ratios(summary: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """One policy's run against the baseline's run on the same stream and machine.

    quality_delta is in the metric's own units (accuracy points as a fraction, or MAE);
    quality_relative = q / q_baseline - 1 (for MAE, +0.02 means 2% worse)."""
    q, qb = summary["prequential"], baseline["prequential"]
    return {
        "energy_total": _div(summary["energy_kwh"]["total"], baseline["energy_kwh"]["total"]),
        "energy_train": _div(summary["energy_kwh"]["train"], baseline["energy_kwh"]["train"]),
        "cpu_seconds": _div(summary["cpu_seconds"]["total"], baseline["cpu_seconds"]["total"]),
        "wall_seconds": _div(summary["wall_seconds"], baseline["wall_seconds"]),
        "quality_delta": q - qb,
        "quality_relative": _div(q, qb) - 1.0,
    }


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN values ignored)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def compare_runs(runs: dict[str, list[dict[str, Any]]], baseline: str = BASELINE
                 ) -> dict[str, Any]:
    """`runs[policy][seed]` are summaries; seed i of a policy is paired with seed i of the
    baseline. Returns ratios (means over seeds) and their spread."""
    if baseline not in runs:
        raise ValueError(f"the baseline policy {baseline!r} must be among the compared policies")
    base = runs[baseline]
    out_ratios: dict[str, dict[str, float]] = {}
    out_spread: dict[str, dict[str, float]] = {}
    for name, summaries in runs.items():
        per_seed = [ratios(s, base[i]) for i, s in enumerate(summaries)]
        out_ratios[name], out_spread[name] = {}, {}
        for key in RATIO_KEYS:
            out_ratios[name][key], out_spread[name][key] = mean_spread([r[key] for r in per_seed])
    return {"ratios": out_ratios, "spread": out_spread}


def mean_summary(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of the numeric figures of several seeds' summaries (first one for the rest)."""
    if len(summaries) == 1:
        return summaries[0]
    out = dict(summaries[0])
    for key in ("prequential", "wall_seconds", "emissions_kg"):
        out[key] = mean_spread([s[key] for s in summaries])[0]
    for key in ("energy_kwh", "cpu_seconds"):
        out[key] = {k: mean_spread([s[key][k] for s in summaries])[0] for k in summaries[0][key]}
    out["decisions"] = {k: mean_spread([s["decisions"][k] for s in summaries])[0]
                        for k in summaries[0]["decisions"]}
    out["seeds"] = len(summaries)
    return out


# -- per-batch curves from the ledger -------------------------------------------------
@dataclass(frozen=True)
class EnergyRow:
    """One metered phase as the ledger recorded it, in recording order."""

    id: int
    hash: str | None
    phase: str
    energy_kwh: float
    cpu_seconds: float
    wall_seconds: float


@dataclass(frozen=True)
class BatchPoint:
    seq: int
    role: str
    decision: str | None
    rows: int
    quality: float  # the champion's metric on the batch before learning from it (prequential)
    prequential: float  # row-weighted running prequential metric over update batches so far
    energy_kwh: float  # all phases attributed to this batch (ingest included)
    train_energy_kwh: float
    cpu_seconds: float
    wall_seconds: float
    cumulative_energy_kwh: float
    cumulative_train_energy_kwh: float


def read_energy_rows(ledger_path: Path, model: str) -> list[EnergyRow]:
    """The ledger's energy rows of one model, read-only, in recording order."""
    conn = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True, timeout=60)
    try:
        rows = conn.execute("SELECT id, hash, phase, energy_kwh, cpu_seconds, wall_seconds "
                            "FROM energy WHERE model=? ORDER BY id", (model,)).fetchall()
    finally:
        conn.close()
    return [EnergyRow(int(i), h, p, e or 0.0, c or 0.0, w or 0.0) for i, h, p, e, c, w in rows]


def attribute_energy(rows: Iterable[EnergyRow]) -> dict[str, dict[str, float]]:
    """Per batch hash: phase sums. Rows without a hash (ingest is recorded before the hash
    is trusted) belong to the next batch that records a phase; the whole-run row is skipped."""
    out: dict[str, dict[str, float]] = {}
    pending: list[EnergyRow] = []
    for r in sorted(rows, key=lambda r: r.id):
        if r.phase not in PHASES:
            continue
        if r.hash is None:
            pending.append(r)
            continue
        acc = out.setdefault(r.hash, {"energy_kwh": 0.0, "train_energy_kwh": 0.0,
                                      "cpu_seconds": 0.0, "wall_seconds": 0.0})
        for p in [*pending, r]:
            acc["energy_kwh"] += p.energy_kwh or 0.0
            acc["cpu_seconds"] += p.cpu_seconds or 0.0
            acc["wall_seconds"] += p.wall_seconds or 0.0
            if p.phase == "train":
                acc["train_energy_kwh"] += p.energy_kwh or 0.0
        pending = []
    return out


def batch_curve(batches: Sequence[BatchRow], energy: Iterable[EnergyRow]) -> list[BatchPoint]:
    """Per processed batch, in arrival order: its prequential quality and energy, and the
    running totals. Bootstrap batches carry energy but no quality."""
    per_hash = attribute_energy(energy)
    points: list[BatchPoint] = []
    cum = cum_train = weighted = 0.0
    n = 0
    for b in sorted(batches, key=lambda b: b.seq):
        if b.status != "processed":
            continue
        e = per_hash.get(b.hash, {"energy_kwh": 0.0, "train_energy_kwh": 0.0,
                                  "cpu_seconds": 0.0, "wall_seconds": 0.0})
        cum += e["energy_kwh"]
        cum_train += e["train_energy_kwh"]
        rows = b.rows or 0
        q = float("nan")
        if b.role == "update" and b.quality_before is not None:
            q = b.quality_before
            weighted += q * rows
            n += rows
        points.append(BatchPoint(b.seq, b.role, b.decision, rows, q,
                                 weighted / n if n else float("nan"), e["energy_kwh"],
                                 e["train_energy_kwh"], e["cpu_seconds"], e["wall_seconds"],
                                 cum, cum_train))
    return points


def curve_records(points: Sequence[BatchPoint]) -> list[dict[str, Any]]:
    return [asdict(p) for p in points]


# -- iso-quality: the cheapest schedule that matches a policy's quality -------------------
ACCURACY_TOLERANCE = 0.005  # half a point of accuracy
MAE_TOLERANCE = 0.02  # 2% of MAE


def within_tolerance(task: str, candidate: float, reference: float) -> bool:
    """Is `candidate`'s quality at least `reference`'s less the tolerance (accuracy − 0.5
    points; MAE at most 2% above)? NaN is never within."""
    if math.isnan(candidate) or math.isnan(reference):
        return False
    if task == "classification":
        return candidate >= reference - ACCURACY_TOLERANCE
    return candidate <= reference * (1 + MAE_TOLERANCE)


def better(task: str, a: float, b: float) -> bool:
    """Is quality `a` strictly better than `b` (higher accuracy, lower MAE)?"""
    return a > b if task == "classification" else a < b


def best_quality(task: str, candidates: dict[str, tuple[float, float]]) -> str | None:
    """Of `candidates` (name -> (quality, cost)), the one of best quality; ties go to the
    cheaper, then the name. None when none has a quality."""
    ok = [(-q if task == "classification" else q, cost, name)
          for name, (q, cost) in candidates.items() if not math.isnan(q)]
    return min(ok)[2] if ok else None


def cheapest_within(task: str, reference: float, candidates: dict[str, tuple[float, float]]
                    ) -> str | None:
    """Of `candidates` (name -> (quality, cost)), the cheapest whose quality is within
    tolerance of `reference`; ties go to the better quality, then the name. None: none is."""
    ok = [(cost, -q if task == "classification" else q, name)
          for name, (q, cost) in candidates.items()
          if within_tolerance(task, q, reference) and not math.isnan(cost)]
    return min(ok)[2] if ok else None


def pareto_frontier(task: str, candidates: dict[str, tuple[float, float]]) -> list[str]:
    """Names (cheapest first) that no other candidate beats on both quality and cost (at
    least as good on both, strictly on one). The cheapest variant within any tolerance of
    any quality is always among them, which is why only these need metering."""
    def dominated(name: str) -> bool:
        q, c = candidates[name]
        return any(oc <= c and not better(task, q, oq) and (oc < c or better(task, oq, q))
                   for other, (oq, oc) in candidates.items() if other != name)

    front = [n for n in candidates if not math.isnan(candidates[n][0]) and not dominated(n)]
    return sorted(front, key=lambda n: (candidates[n][1], n))


def iso_quality(task: str, policy: list[dict[str, Any]],
                variants: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The policy's whole-pipeline energy ÷ that of the cheapest metered variant (by mean
    measured energy) whose mean quality is within tolerance of the policy's mean quality.
    Seed i is paired with seed i of the variant.

    When the policy is better than every metered variant by more than the tolerance, no
    variant matches it: the ratio is then against the best of them (`beats_every_variant`),
    which reaches less quality than the policy, so the ratio flatters the schedule.
    None when no variant was metered or scored."""
    q = mean_spread([s["prequential"] for s in policy])[0]
    means = {name: (mean_spread([s["prequential"] for s in runs])[0],
                    mean_spread([s["energy_kwh"]["total"] for s in runs])[0])
             for name, runs in variants.items()}
    chosen = cheapest_within(task, q, means)
    beaten = chosen is None
    if beaten:
        chosen = best_quality(task, means)
        if chosen is None or math.isnan(q):
            return None
    per_seed = [ratios(s, variants[chosen][i]) for i, s in enumerate(policy)]
    out: dict[str, Any] = {"baseline": chosen, "beats_every_variant": beaten}
    for key in ("energy_total", "energy_train", "cpu_seconds", "quality_delta"):
        out[key], out[f"{key}_spread"] = mean_spread([r[key] for r in per_seed])
    return out


def hindsight_choice(task: str, metered: dict[str, tuple[float, float]],
                     screened: dict[str, float]) -> dict[str, Any] | None:
    """What a user who had watched these batches would run: the cheapest metered run
    (`metered`: name -> (mean quality, mean energy)) within tolerance of the best quality
    any run reached, metered or only screened (`screened`: name -> quality). Chosen on
    the reported batches themselves, so a pick in hindsight, never a tuned setting.
    None when nothing is metered."""
    qualities = {n: q for n, (q, _) in metered.items()} | screened
    finite = {n: q for n, q in qualities.items() if not math.isnan(q)}
    if not finite:
        return None
    pick = max if task == "classification" else min
    best = pick(finite, key=lambda n: (finite[n], n))
    choice = cheapest_within(task, finite[best], metered)
    if choice is None:
        return None
    return {"choice": choice, "quality": metered[choice][0], "energy_kwh": metered[choice][1],
            "best": best, "best_quality": finite[best]}


def unmetered_matches(task: str, policy_quality: dict[str, float],
                      metered: dict[str, tuple[float, float]],
                      screened_cost: dict[str, tuple[float, float]]) -> list[str]:
    """Variants to meter next so that each policy's iso-quality baseline is really the
    cheapest. For each policy (name -> its mean metered quality): the unmetered variant
    with the fewest training row-epochs whose screened quality is within tolerance and
    which trains less than the policy's current metered match (`metered`: name -> (mean
    quality, row-epochs)). Screening runs one seed; the mean over seeds of a metered pick
    can fall outside tolerance, and without this a dearer match (all history) would
    stand in for cheaper ones never metered."""
    wanted: list[str] = []
    for q in policy_quality.values():
        current = cheapest_within(task, q, metered)
        ceiling = metered[current][1] if current else math.inf
        found = cheapest_within(task, q, {n: c for n, c in screened_cost.items()
                                          if n not in metered and c[1] < ceiling})
        if found is None and current is None and cheapest_within(task, q, screened_cost) is None:
            # Better than every variant screened: its ratio is against the best of them
            # (`iso_quality`), which must then be metered.
            found = best_quality(task, screened_cost)
            found = None if found in metered else found
        if found and found not in wanted:
            wanted.append(found)
    return wanted


def windowed(runs: dict[str, list[dict[str, Any]]],
             curves: dict[str, list[list[dict[str, Any]]]],
             from_seq: int | None) -> dict[str, list[dict[str, Any]]]:
    """Every run's summary restricted to batches >= from_seq (`window_summary`, seed i
    with curve i); unchanged without a prefix."""
    if not from_seq:
        return runs
    return {p: [window_summary(s, curves[p][i], from_seq) for i, s in enumerate(per)]
            for p, per in runs.items()}


def window_summary(summary: dict[str, Any], curve: Sequence[dict[str, Any]], from_seq: int
                   ) -> dict[str, Any]:
    """A run's summary restricted to batches with seq >= from_seq, from the ledger's
    per-batch rows (`batch_curve`): the measured phases of those batches (ingest, drift,
    train, evaluate, register), not the whole-run tracker, which cannot be cut."""
    part = [p for p in curve if p["seq"] >= from_seq]
    upd = [p for p in part if p["role"] == "update" and not math.isnan(p["quality"])]
    rows = sum(p["rows"] for p in upd)
    decisions = {"skip": 0, "finetune": 0, "retrain": 0}
    for p in part:
        if p["role"] == "update" and p["decision"] in decisions:
            decisions[p["decision"]] += 1
    out = dict(summary)
    out.update({
        "from_batch": from_seq, "batches": len(part),
        "prequential": sum(p["quality"] * p["rows"] for p in upd) / rows if rows else math.nan,
        "decisions": decisions,
        "energy_kwh": {"total": sum(p["energy_kwh"] for p in part),
                       "train": sum(p["train_energy_kwh"] for p in part)},
        "cpu_seconds": {"total": sum(p["cpu_seconds"] for p in part)},
        "wall_seconds": sum(p["wall_seconds"] for p in part),
        "emissions_kg": math.nan,  # per-batch emissions are not in the curve
    })
    return out


# -- naive: no model at all ---------------------------------------------------------------
class _Arrived(Protocol):
    seq: int
    frame: pd.DataFrame


def naive_prequential(task: str, target: str, batches: Sequence[_Arrived], from_seq: int = 0
                      ) -> float:
    """Predict every labelled row of a batch with the last labelled batch's majority class
    (ties: the smallest label) or mean target, then score it; labelled-row-weighted over
    batches with seq >= from_seq. Rows whose target is missing are neither scored nor
    used; a batch with no labels keeps the previous prediction. NaN: nothing scored."""
    guess: str | float | None = None
    total = 0.0
    n = 0
    for b in batches:
        y = b.frame[target].dropna()
        if b.seq >= from_seq and guess is not None and len(y):
            if task == "classification":
                total += float((y.astype(str) == guess).sum())
            else:
                total += float((y.astype(float) - float(guess)).abs().sum())
            n += len(y)
        if len(y):
            if task == "classification":
                counts = y.astype(str).value_counts()
                guess = min(counts.index[counts == counts.max()])
            else:
                guess = float(y.astype(float).mean())
    return total / n if n else math.nan


__all__ = ["BASELINE", "BASELINE_CHOICES", "DEFAULT_POLICIES", "BatchPoint", "EnergyRow",
           "attribute_energy", "batch_curve", "best_quality", "better", "cheapest_within",
           "compare_runs", "curve_records", "hindsight_choice", "iso_quality", "mean_spread",
           "mean_summary", "naive_prequential", "overhead_share", "pareto_frontier", "ratios",
           "read_energy_rows", "seconds_per_batch", "unmetered_matches", "window_summary",
           "windowed", "within_tolerance"]
