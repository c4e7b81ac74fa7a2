"""One MLflow parent run per replay: the per-batch runs nest under it, and it carries
the replay's totals, so MLflow's own compare view puts policies side by side."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tasks.runtime import Runtime

CONFIG_HASH_CHARS = 12


def config_hash(path: str | Path) -> str:
    """sha256 of the config file's text, first 12 hex digits: which knobs a run used."""
    return hashlib.sha256(Path(path).read_text().encode()).hexdigest()[:CONFIG_HASH_CHARS]


def start_replay_run(rt: Runtime) -> str:
    """Opened after any restart: a replay that finds processed batches resumes a stream."""
    resumed = bool(rt.ledger.batches(rt.model_name, ("processed",)))
    tags = {"policy": rt.policy_name, "model": rt.model_name, "dataset": rt.cfg.name,
            "config": rt.config_path, "config_hash": config_hash(rt.config_path),
            "kind": "replay", "resumed": str(resumed).lower()}
    return rt.tracker.start_parent(f"{rt.model_name} replay", tags)


def totals(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's figures as flat MLflow metrics (prequential quality, kWh and
    CPU-s per phase, decisions)."""
    out: dict[str, float] = {f"prequential_{summary['metric']}": summary["prequential"],
                             "batches": summary["batches"], "rows": summary["rows"],
                             "wall_seconds": summary["wall_seconds"],
                             "emissions_kg": summary["emissions_kg"]}
    out.update({f"energy_kwh.{p}": v for p, v in summary["energy_kwh"].items()})
    out.update({f"cpu_seconds.{p}": v for p, v in summary["cpu_seconds"].items()})
    out.update({f"decisions.{d}": n for d, n in summary["decisions"].items()})
    return out


def finish_replay_run(rt: Runtime, summary: dict[str, Any], status: str) -> None:
    """Totals from the ledger (a resumed replay reports the whole stream), then close."""
    run_id, rt.parent_run_id = rt.parent_run_id, None
    if run_id is None:
        return
    tags = {"energy_method": summary["energy_method"],
            "champion_version": str(summary["mlflow"].get("champion_version") or "")}
    rt.tracker.finish_parent(run_id, totals(summary), tags, status=status)
