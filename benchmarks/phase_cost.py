"""What each policy's batches cost, by the ledger's measured phases, for an A/B of two codes.

`greenloop compare --from-batch K` bills a policy the measured phases of batches >= K
(ingest, observe, drift, train, evaluate, register). This replays the same way (one task
run per batch, its own throwaway home, the shipped config with the policy set), reads
those same ledger rows and prints them per phase, so two versions of the pipeline can be
compared in minutes instead of a compare's hour (screening, all history every batch).
Rounds alternate the policies; run it once per code version (PYTHONPATH=<worktree>),
in the same minutes, on an otherwise idle machine.

    python benchmarks/phase_cost.py --config configs/elec2.yaml --from-batch 42 \\
        --policy gated --policy periodic-e4-w8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def policy_knobs(policy: str) -> dict:
    """`periodic-e4-w8` -> every 4th batch on the last 8; other names as they are."""
    if not policy.startswith("periodic-"):
        return {"name": policy}
    every, window = policy.removeprefix("periodic-").split("-")
    return {"name": "periodic", "periodic_every": int(every[1:]),
            "periodic_window_batches": None if window == "wall" else int(window[1:])}


def replay_once(config: Path, policy: str) -> Path:
    """One fresh replay of `policy` in a throwaway home; returns the home."""
    from flows.replay import replay

    raw = yaml.safe_load(config.read_text())
    home = Path(tempfile.mkdtemp(prefix="phase-cost-"))
    source = (REPO / raw["data"]["path"]).resolve()
    (home / "data").mkdir()
    shutil.copy(source, home / "data" / source.name)
    raw["data"]["path"] = f"data/{source.name}"
    raw.setdefault("policy", {}).update(policy_knobs(policy))
    raw.setdefault("drift", {})["report"] = "never"  # as compare replays
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    replay(str(path), restart=True, home=str(home), subflow_per_batch=False)
    return home


def billed(home: Path, from_seq: int) -> dict:
    """The measured phases of batches >= from_seq, per phase and in all, attributed as
    compare attributes them (an ingest row, recorded before its batch's hash is trusted,
    belongs to the next batch that records a phase: `greenloop.compare.attribute_energy`)."""
    from greenloop.compare import PHASES, read_energy_rows

    ledger = home / "state" / "ledger.sqlite"
    with sqlite3.connect(ledger) as c:
        model, = c.execute("SELECT model FROM batches LIMIT 1").fetchone()
        seq = dict(c.execute("SELECT hash, seq FROM batches WHERE model = ?", (model,)))
        decisions = dict(c.execute("SELECT decision, COUNT(*) FROM batches WHERE model = ?"
                                   " AND seq >= ? GROUP BY decision", (model, from_seq)))
    phases: dict[str, dict[str, float]] = {}
    pending = []
    for r in read_energy_rows(ledger, model):
        if r.phase not in PHASES:
            continue
        if r.hash is None:
            pending.append(r)
            continue
        counted, pending = ([*pending, r] if seq.get(r.hash, -1) >= from_seq else []), []
        for p in counted:
            acc = phases.setdefault(p.phase, {"cpu_seconds": 0.0, "energy_kwh": 0.0,
                                              "wall_seconds": 0.0})
            acc["cpu_seconds"] += p.cpu_seconds
            acc["energy_kwh"] += p.energy_kwh
            acc["wall_seconds"] += p.wall_seconds
    total = {k: sum(v[k] for v in phases.values())
             for k in ("cpu_seconds", "energy_kwh", "wall_seconds")}
    return {"total": total, "phases": phases, "decisions": decisions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--policy", action="append", required=True)
    ap.add_argument("--from-batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sys.path.insert(0, os.environ.get("PYTHONPATH", "").split(":")[0] or str(REPO))
    results: dict[str, list[dict]] = {p: [] for p in args.policy}
    for _ in range(args.rounds):
        for policy in args.policy:
            home = replay_once(args.config.resolve(), policy)
            results[policy].append({**billed(home, args.from_batch),
                                    "load_average_1min": os.getloadavg()[0]})
            shutil.rmtree(home, ignore_errors=True)
            r = results[policy][-1]
            print(f"{policy}: {r['total']['cpu_seconds']:.2f} CPU-s, "
                  f"{r['total']['energy_kwh']:.3e} kWh, decisions {r['decisions']}, "
                  f"load {r['load_average_1min']:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
