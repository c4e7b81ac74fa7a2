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
from typing import Any

from greenloop.energy import PHASES
from greenloop.ledger import BatchRow

BASELINE = "periodic"
DEFAULT_POLICIES = ("periodic", "gated", "cost-aware", "drift-retrain", "finetune", "never")
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


__all__ = ["BASELINE", "DEFAULT_POLICIES", "BatchPoint", "EnergyRow", "attribute_energy",
           "batch_curve", "compare_runs", "curve_records", "mean_spread", "mean_summary",
           "overhead_share", "ratios", "read_energy_rows", "seconds_per_batch"]
