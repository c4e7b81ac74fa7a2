"""Soak: `greenloop run` over a whole stream with random faults, re-run until it finishes;
then every batch must be in the ledger exactly once, the registry consistent, and the
result equal to a fault-free run of the same stream.

    python -m tests.reliability.soak --home /tmp/soak --reference /tmp/ref \
        --faults random:0.004,random:0.002:fail [--max-batches N]

`--home` and `--reference` are project homes (data/sources and configs/ are copied in
if missing); the reference is run without faults unless its summary exists already.
Prints a JSON report (figures for docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "MLFLOW_DISABLE_TELEMETRY": "true", "CODECARBON_LOG_LEVEL": "error",
         "DVC_NO_ANALYTICS": "1"}


def prepare_home(home: Path) -> None:
    (home / "data").mkdir(parents=True, exist_ok=True)
    if not (home / "data" / "sources").exists():
        shutil.copytree(ROOT / "data" / "sources", home / "data" / "sources")
    if not (home / "configs").exists():
        shutil.copytree(ROOT / "configs", home / "configs")


def run_once(home: Path, config: str, faults: str | None, max_batches: int | None,
             log: Path) -> tuple[int, float]:
    env = {**os.environ, **QUIET}
    env.pop("GREENLOOP_FAULTS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    if faults:
        env["GREENLOOP_FAULTS"] = faults
    cmd = [sys.executable, "-m", "greenloop_cli", "run", "--config", config, "--home", str(home)]
    if max_batches:
        cmd += ["--max-batches", str(max_batches)]
    t0 = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n=== {' '.join(cmd)} (GREENLOOP_FAULTS={faults})\n")
        out.flush()
        rc = subprocess.run(cmd, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
                            check=False).returncode
    return rc, time.perf_counter() - t0


def run_until_done(home: Path, config: str, faults: str | None, max_batches: int | None,
                   max_attempts: int = 60) -> dict[str, Any]:
    prepare_home(home)
    log = home / "soak.log"
    attempts: list[dict[str, Any]] = []
    for _ in range(max_attempts):
        rc, wall_s = run_once(home, config, faults, max_batches, log)
        attempts.append({"returncode": rc, "wall_seconds": round(wall_s, 1)})
        if rc == 0:
            break
    return {"attempts": attempts, "killed": sum(a["returncode"] == -9 for a in attempts),
            "failed": sum(a["returncode"] not in (0, -9) for a in attempts),
            "finished": bool(attempts) and attempts[-1]["returncode"] == 0}


def ledger_view(home: Path, model: str) -> dict[str, Any]:
    c = sqlite3.connect(home / "state" / "ledger.sqlite")
    rows = c.execute("SELECT seq, hash, status, decision, quality_before, version, rows "
                     "FROM batches WHERE model=? ORDER BY seq", (model,)).fetchall()
    energy_attempts = c.execute(
        "SELECT COUNT(DISTINCT hash || ':' || id) FROM energy WHERE model=? AND hash IS NOT NULL",
        (model,)).fetchone()[0]
    return {
        "rows": rows,
        "versions": [v for (v,) in c.execute("SELECT version FROM versions WHERE model=?",
                                             (model,))],
        "champion": (c.execute("SELECT version FROM aliases WHERE model=? ORDER BY id DESC "
                               "LIMIT 1", (model,)).fetchone() or [None])[0],
        "duplicates": c.execute("SELECT COUNT(*) FROM duplicates WHERE model=?",
                                (model,)).fetchone()[0],
        "energy_rows": energy_attempts,
        "energy_kwh": c.execute("SELECT SUM(energy_kwh) FROM energy WHERE model=? AND "
                                "phase != 'run'", (model,)).fetchone()[0] or 0.0,
    }


def registry_view(home: Path, model: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = [int(v.version) for v in client.search_model_versions(f"name='{model}'")]
    try:
        alias = int(client.get_model_version_by_alias(model, "champion").version)
    except Exception:  # noqa: BLE001 - no alias
        alias = None
    return {"versions": sorted(versions), "alias": alias}


def prequential(rows: list[tuple]) -> float:
    scored = [(q, n) for (_, _, _, _, q, _, n) in rows if q is not None]
    total = sum(n for _, n in scored)
    return sum(q * n for q, n in scored) / total if total else float("nan")


def compare(soak_home: Path, ref_home: Path, model: str) -> dict[str, Any]:
    soak, ref = ledger_view(soak_home, model), ledger_view(ref_home, model)
    reg = registry_view(soak_home, model)
    hashes = [r[1] for r in soak["rows"]]
    same = [(a[0], a[1], a[3]) == (b[0], b[1], b[3]) for a, b in zip(soak["rows"], ref["rows"],
                                                                     strict=False)]
    q_diff = max((abs((a[4] or 0) - (b[4] or 0)) for a, b in zip(soak["rows"], ref["rows"],
                                                                  strict=False)), default=0.0)
    return {
        "batches": len(soak["rows"]),
        "reference_batches": len(ref["rows"]),
        "unique_hashes": len(set(hashes)),
        "processed": sum(r[2] == "processed" for r in soak["rows"]),
        "lost": len(ref["rows"]) - sum(r[2] == "processed" for r in soak["rows"]),
        "duplicates_dropped": soak["duplicates"],
        "same_decisions": all(same) and len(soak["rows"]) == len(ref["rows"]),
        "decisions_differing": same.count(False),
        "max_quality_before_diff": q_diff,
        "prequential": prequential(soak["rows"]),
        "prequential_reference": prequential(ref["rows"]),
        "ledger_versions": len(soak["versions"]),
        "ledger_versions_missing_in_mlflow": sorted(set(soak["versions"]) - set(reg["versions"])),
        "orphan_mlflow_versions": len(set(reg["versions"]) - set(soak["versions"])),
        "champion_ledger": soak["champion"], "champion_mlflow_alias": reg["alias"],
        "energy_kwh_soak": soak["energy_kwh"], "energy_kwh_reference": ref["energy_kwh"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--config", default="configs/elec2.yaml")
    ap.add_argument("--model", default="elec2-gated")
    ap.add_argument("--faults", default="random:0.004,random:0.002:fail")
    ap.add_argument("--max-batches", type=int, default=None)
    ap.add_argument("--compare-only", action="store_true", help="both homes have run")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.compare_only:
        print(json.dumps(compare(args.home, args.reference, args.model), indent=1))
        return
    ref_done = (args.reference / "state" / "ledger.sqlite").exists() and any(
        (args.reference / "reports").glob("*/summary.json"))
    ref = None if ref_done else run_until_done(args.reference, args.config, None,
                                               args.max_batches, max_attempts=1)
    soak = run_until_done(args.home, args.config, args.faults, args.max_batches)
    report = {"faults": args.faults, "soak": soak, "reference_run": ref,
              **compare(args.home, args.reference, args.model),
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
