"""The served mode, measured: `greenloop serve` in a temporary home, N arrivals dropped into
data/landing/<dataset>/, beside the in-process replay of the same batches, in one run.

    .venv/bin/python benchmarks/served.py --config configs/elec2.yaml --batches 10 \
        --idle-seconds 600 --out reports/served-elec2.json
    .venv/bin/python benchmarks/served.py --synthetic 300x8 --policy never --batches 20 \
        --idle-seconds 60 --out reports/served-skip-300x8.json   # every arrival a skip

What it reports:
- per arrival, CPU-seconds of the whole serve process tree (serve: runner, task worker,
  watcher; the Prefect server it started, a child process) from the drop (rename into
  landing) until the ledger says `processed`, plus a settle second for log shipping, with
  the idle rate over the same seconds subtracted; and what the ledger billed that batch
  (its phases, `service` included);
- drop -> processed latency (p50, p95), from the ledger's own timestamp;
- idle CPU of the same tree per hour over `--idle-seconds` with nothing arriving;
- the in-process replay (`greenloop run`, resumed after the same bootstrap) of the same
  batches: its whole-run CPU-seconds per batch, as `greenloop compare` counts them.
Energy: the ledger's CodeCarbon readings (process mode, no RAPL here: load x constants);
CPU-seconds and wall time are the measured quantities. Run it on an otherwise idle machine
and read the load average it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "MLFLOW_DISABLE_TELEMETRY": "true", "CODECARBON_LOG_LEVEL": "error",
         "DVC_NO_ANALYTICS": "1", "GIT_PYTHON_REFRESH": "quiet"}


def greenloop(*args: str) -> list[str]:
    return [sys.executable, "-m", "greenloop_cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_home(config: Path, root: Path, policy: str | None = None) -> tuple[Path, Path]:
    """A fresh project home with the config's source data (and `policy` served, if
    given); returns (home, config)."""
    cfg = yaml.safe_load(config.read_text())
    home = Path(tempfile.mkdtemp(prefix="greenloop-served-", dir=root))
    base = config.parent.parent  # the folder holding configs/ and data/ (the repo's own)
    source = base / cfg["data"]["path"]
    (home / source.parent.relative_to(base)).mkdir(parents=True)
    shutil.copytree(source.parent, home / source.parent.relative_to(base), dirs_exist_ok=True)
    (home / "configs").mkdir()
    shutil.copy(config, home / "configs" / config.name)
    if policy:
        set_policy(home / "configs" / config.name, policy)
    return home, home / "configs" / config.name


def tree_cpu(root: psutil.Process) -> float:
    """The serve process tree's CPU-s, read as the service meter reads it (children that
    exited and were reaped, e.g. git or DVC calls, included)."""
    from greenloop.service import ProcessTree

    return ProcessTree([root.pid]).cpu_seconds()


def ledger_rows(home: Path, model: str) -> dict[int, dict[str, Any]]:
    path = home / "state" / "ledger.sqlite"
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT seq, hash, status, decision, updated_at, quality_before, "
                            "labelled_rows FROM batches WHERE model=?", (model,)).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        conn.close()
    return {int(r["seq"]): dict(r) for r in rows}


def billed(home: Path, model: str, digest: str, timeout_s: float = 10) -> dict[str, float]:
    """What the ledger billed one batch: every phase row attributed to it (ingest rows are
    written before the hash is trusted: greenloop.compare.attribute_energy assigns them),
    waiting for its `service` row (written a settle second after the arrival's task)."""
    from greenloop.compare import attribute_energy, read_energy_rows

    path = home / "state" / "ledger.sqlite"
    t0 = time.time()
    while True:
        rows = read_energy_rows(path, model)
        service = [r for r in rows if r.hash == digest and r.phase == "service"]
        if service or time.time() - t0 > timeout_s:
            break
        time.sleep(0.1)
    per = attribute_energy(rows).get(digest, {"energy_kwh": 0.0, "cpu_seconds": 0.0})
    return {"energy_kwh": per["energy_kwh"], "cpu_seconds": per["cpu_seconds"],
            "service_cpu_seconds": sum(r.cpu_seconds for r in service)}


def drop(stream: Path, landing: Path, seq: int) -> float:
    """Temp name, then rename: the way a careful writer delivers a file."""
    src = stream / f"batch-{seq:05d}.csv"
    tmp = landing / f".batch-{seq:05d}.csv.part"
    shutil.copyfile(src, tmp)
    t = time.time()
    tmp.rename(landing / src.name)
    return t


def wait_processed(home: Path, model: str, seqs: set[int], timeout_s: float) -> dict[int, dict]:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        rows = ledger_rows(home, model)
        if all(rows.get(s, {}).get("status") in ("processed", "failed") for s in seqs):
            return rows
        time.sleep(0.05)
    raise TimeoutError(f"batches {sorted(seqs)} not processed after {timeout_s} s")


def wait_health(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - local
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def served(config: Path, n: int, idle_s: float, workdir: Path, log: Path,
           policy: str | None = None) -> dict[str, Any]:
    home, cfg_path = make_home(config, workdir, policy)
    cfg = yaml.safe_load(cfg_path.read_text())
    name, boot = cfg["name"], cfg["data"].get("bootstrap_batches", 4)
    model = f"{name}-{cfg.get('policy', {}).get('name', 'gated')}"
    env = {**os.environ, **QUIET}
    subprocess.run(greenloop("prepare", "--config", str(cfg_path), "--home", str(home)),
                   check=True, env=env, capture_output=True)
    port = free_port()
    t_start = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(greenloop("serve", "--config", str(cfg_path), "--home", str(home),
                                          "--port", str(port)),
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        wait_health(f"http://127.0.0.1:{port}/api/health", proc)
        root = psutil.Process(proc.pid)
        stream, landing = home / "data" / "stream" / name, home / "data" / "landing" / name
        landing.mkdir(parents=True, exist_ok=True)
        for seq in range(1, boot + 1):  # the bootstrap, as a user would deliver it
            drop(stream, landing, seq)
        wait_processed(home, model, set(range(1, boot + 1)), 600)
        startup = {"seconds_to_bootstrapped": time.time() - t_start,
                   "cpu_seconds_to_bootstrapped": tree_cpu(root)}
        time.sleep(5)  # let the bootstrap's log shipping and flushes settle
        c0, w0 = tree_cpu(root), time.time()
        time.sleep(idle_s)
        idle_cpu_s, idle_wall = tree_cpu(root) - c0, time.time() - w0
        idle_rate = idle_cpu_s / idle_wall
        arrivals = []
        for seq in range(boot + 1, boot + 1 + n):
            c0 = tree_cpu(root)
            t_drop = drop(stream, landing, seq)
            rows = wait_processed(home, model, {seq}, 300)
            row = rows[seq]
            bill = billed(home, model, row["hash"])  # waits for the arrival's window to close
            time.sleep(0.5)  # the MLflow metrics logged after the service row
            window = time.time() - t_drop
            cpu = tree_cpu(root) - c0
            arrivals.append({"seq": seq, "decision": row["decision"],
                             "quality_before": row["quality_before"],
                             "labelled_rows": row["labelled_rows"],
                             "latency_s": row["updated_at"] - t_drop,
                             "cpu_seconds_raw": cpu,
                             "cpu_seconds": cpu - idle_rate * window,
                             "window_s": window, "ledger_cpu_seconds": bill["cpu_seconds"],
                             "ledger_service_cpu_seconds": bill["service_cpu_seconds"],
                             "ledger_energy_kwh": bill["energy_kwh"]})
            time.sleep(1.0)
        status = subprocess.run(greenloop("status", "--config", str(cfg_path), "--home",
                                          str(home)), env=env, capture_output=True, text=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return {"home": str(home), "startup": startup, "idle_seconds": idle_wall,
            "idle_cpu_seconds": idle_cpu_s, "idle_cpu_seconds_per_hour": idle_rate * 3600,
            "idle_share_of_core": idle_rate, "arrivals": arrivals,
            "status": status.stdout[-3000:]}


def replayed(config: Path, n: int, workdir: Path, policy: str | None = None) -> dict[str, Any]:
    """`greenloop run` over the bootstrap, then resumed over the same N batches: the
    resumed run's whole-run CPU-s (its own meter) per batch, as compare counts them."""
    home, cfg_path = make_home(config, workdir, policy)
    cfg = yaml.safe_load(cfg_path.read_text())
    boot = cfg["data"].get("bootstrap_batches", 4)
    env = {**os.environ, **QUIET}
    subprocess.run(greenloop("run", "--config", str(cfg_path), "--home", str(home),
                             "--max-batches", str(boot)), check=True, env=env,
                   capture_output=True)
    name = cfg.get("policy", {}).get("name", "gated")
    summary_path = home / "reports" / f"{cfg['name']}-{name}" / "summary.json"
    before = json.loads(summary_path.read_text())
    t0 = time.perf_counter()
    subprocess.run(greenloop("run", "--config", str(cfg_path), "--home", str(home),
                             "--max-batches", str(boot + n)), check=True, env=env,
                   capture_output=True)
    wall = time.perf_counter() - t0
    after = json.loads(summary_path.read_text())
    cpu = after["cpu_seconds"]["total"] - before["cpu_seconds"]["total"]
    kwh = after["energy_kwh"]["total"] - before["energy_kwh"]["total"]
    return {"home": str(home), "cpu_seconds_per_batch": cpu / n, "energy_kwh_per_batch": kwh / n,
            "process_wall_seconds": wall,
            "decisions": after["decisions"]}


def synthetic_config(folder: Path, shape: str, batches: int) -> Path:
    """The seeded SEA-like stream of `shape` in `folder`, beside its data-only config."""
    from skip_cost import synthetic_home

    folder.mkdir(parents=True)
    return Path(synthetic_home(folder, shape, batches + 1, seed=0))


def set_policy(config: Path, policy: str) -> None:
    """Rewrite the home's copy of the config to serve `policy`: a policy name, or a
    periodic variant as `compare` names them (`periodic-e8-w16`: a full retrain every 8
    batches on the last 16)."""
    from greenloop.policy import parse_variant

    cfg = yaml.safe_load(config.read_text())
    section = dict(cfg.get("policy") or {})
    if policy.startswith("periodic-"):
        every, window = parse_variant(policy)
        section.update(name="periodic", periodic_every=every, periodic_window_batches=window)
    else:
        section["name"] = policy
    cfg["policy"] = section
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))


def reported(arrivals: list[dict[str, Any]], from_batch: int) -> dict[str, Any]:
    """Totals over the arrivals with seq >= from_batch (compare's --from-batch): CPU-s of
    the whole tree, the ledger's kWh, decisions and prequential quality (row-weighted over
    labelled rows, as compare scores it)."""
    part = [a for a in arrivals if a["seq"] >= from_batch]
    scored = [a for a in part if a["quality_before"] is not None and a["labelled_rows"]]
    rows = sum(a["labelled_rows"] for a in scored)
    decisions: dict[str, int] = {}
    for a in part:
        decisions[a["decision"]] = decisions.get(a["decision"], 0) + 1
    return {"from_batch": from_batch, "batches": len(part),
            "cpu_seconds": sum(a["cpu_seconds"] for a in part),
            "ledger_cpu_seconds": sum(a["ledger_cpu_seconds"] for a in part),
            "ledger_energy_kwh": sum(a["ledger_energy_kwh"] for a in part),
            "decisions": decisions,
            "quality": sum(a["quality_before"] * a["labelled_rows"] for a in scored) / rows
            if rows else None}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "elec2.yaml")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--idle-seconds", type=float, default=120)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "served.json")
    ap.add_argument("--synthetic", default=None, metavar="ROWSxFEATURES",
                    help="a seeded SEA-like stream of this shape (benchmarks/skip_cost.py) "
                         "with a data-only config, instead of --config")
    ap.add_argument("--policy", default=None, help="the policy served (default: the "
                    "config's): e.g. `never` (every timed arrival a skip) or a periodic "
                    "variant, `periodic-e8-w16`")
    ap.add_argument("--from-batch", type=int, default=None, metavar="K",
                    help="also total the arrivals from batch K on (compare's --from-batch)")
    ap.add_argument("--no-replay", action="store_true",
                    help="serve only: skip the in-process replay of the same batches")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="greenloop-bench-"))
    if args.synthetic:
        args.config = synthetic_config(work / "synthetic", args.synthetic, args.batches)
    load0 = os.getloadavg()
    s = served(args.config.resolve(), args.batches, args.idle_seconds, work, work / "serve.log",
               args.policy)
    r = None if args.no_replay else replayed(args.config.resolve(), args.batches, work,
                                             args.policy)
    cpu = [a["cpu_seconds"] for a in s["arrivals"]]
    lat = [a["latency_s"] for a in s["arrivals"]]
    result = {
        "config": str(args.config), "policy": args.policy, "batches": args.batches,
        "load_average_before": load0,
        "load_average_after": os.getloadavg(),
        "served": s, "replay": r,
        "served_cpu_seconds_per_batch_median": statistics.median(cpu),
        "served_cpu_seconds_per_batch_mean": statistics.fmean(cpu),
        "ledger_cpu_seconds_per_batch_mean": statistics.fmean(
            a["ledger_cpu_seconds"] for a in s["arrivals"]),
        "served_over_replay_cpu": statistics.fmean(cpu) / r["cpu_seconds_per_batch"]
        if r else None,
        "latency_p50_s": statistics.median(lat), "latency_p95_s": pct(lat, 0.95),
        "idle_share_of_core": s["idle_share_of_core"],
    }
    if args.from_batch is not None:
        result["reported"] = reported(s["arrivals"], args.from_batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    keys = ("served_cpu_seconds_per_batch_median", "served_cpu_seconds_per_batch_mean",
            "ledger_cpu_seconds_per_batch_mean", "served_over_replay_cpu", "latency_p50_s",
            "latency_p95_s", "idle_share_of_core")
    print(json.dumps({k: result[k] for k in keys} | {
        "replay_cpu_seconds_per_batch": r["cpu_seconds_per_batch"] if r else None,
        "load_average_before": load0, "load_average_after": result["load_average_after"]}
        | ({"reported": result["reported"]} if "reported" in result else {}), indent=2))
    print(f"written: {args.out}; serve log: {work / 'serve.log'}")


if __name__ == "__main__":
    main()
