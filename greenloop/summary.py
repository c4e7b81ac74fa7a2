"""The run summary: built only from the ledger, so a resumed run reports the whole stream."""

from __future__ import annotations

from typing import Any

from greenloop.energy import PHASES
from greenloop.evaluate import metric_name
from greenloop.ledger import Ledger


def prequential(ledger: Ledger, model: str) -> tuple[float, int, int]:
    """Test-then-train quality over post-bootstrap batches, weighted by labelled rows (rows
    without a target are predicted but cannot be scored): (value, batches, rows)."""
    rows = [b for b in ledger.batches(model, ("processed",))
            if b.role == "update" and b.quality_before is not None]
    n = sum(b.scored_rows for b in rows)
    value = sum((b.quality_before or 0.0) * b.scored_rows for b in rows) / n if n else float("nan")
    return value, len(rows), n


def build_summary(ledger: Ledger, *, model: str, dataset: str, policy: str, task: str,
                  energy_method: str, mlflow: dict[str, Any]) -> dict[str, Any]:
    value, _, _ = prequential(ledger, model)
    processed = ledger.batches(model, ("processed",))
    decisions = {"skip": 0, "finetune": 0, "retrain": 0}
    for b in processed:
        if b.role == "update" and b.decision in decisions:
            decisions[b.decision] += 1
    by_phase = ledger.energy_by_phase(model)
    run = by_phase.get("run", {})
    energy = {p: by_phase.get(p, {}).get("energy_kwh", 0.0) or 0.0 for p in PHASES}
    cpu = {p: by_phase.get(p, {}).get("cpu_seconds", 0.0) or 0.0 for p in PHASES}
    # The whole run is metered by its own tracker; phases are checked against it.
    energy["total"] = run.get("energy_kwh") or sum(energy.values())
    cpu["total"] = run.get("cpu_seconds") or sum(cpu.values())
    # What the run meter saw outside every phase: Prefect flow and task runs, progress
    # output, ledger writes between phases. Reported, not hidden.
    energy["orchestration"] = max(energy["total"] - sum(energy[p] for p in PHASES), 0.0)
    cpu["orchestration"] = max(cpu["total"] - sum(cpu[p] for p in PHASES), 0.0)
    return {
        "dataset": dataset, "policy": policy, "task": task,
        "batches": len(processed), "rows": sum(b.rows or 0 for b in processed),
        "unlabelled_rows": sum((b.rows or 0) - b.scored_rows for b in processed),
        "update_batches": sum(decisions.values()),
        "metric": metric_name(task), "prequential": value,
        "decisions": decisions,
        "energy_kwh": energy, "cpu_seconds": cpu,
        "wall_seconds": run.get("wall_seconds") or sum(
            by_phase.get(p, {}).get("wall_seconds", 0.0) or 0.0 for p in PHASES),
        "emissions_kg": run.get("emissions_kg") or sum(
            by_phase.get(p, {}).get("emissions_kg", 0.0) or 0.0 for p in PHASES),
        "energy_method": energy_method,
        "phases_share_of_total": (sum(energy[p] for p in PHASES) / energy["total"]
                                  if energy["total"] else float("nan")),
        "mlflow": mlflow,
    }
