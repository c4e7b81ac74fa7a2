"""One arrival and the quiet after it, served two ways, metered whole:

- **always on**: `greenloop serve`, up before the arrival and after it;
- **wake**: `greenloop wake --idle-exit auto`, which starts `serve --idle-exit auto` for
  the arrival; that serve stops itself once its idle time has cost as much as its own
  start-up (greenloop/linger.py), and wake waits on inotify again.

    .venv/bin/python benchmarks/wake.py --config configs/elec2.yaml \
        --always-on-seconds 600 --wake-seconds 1200 --out docs/benchmarks/wake-elec2.json

Both start from the same state: a fresh home whose champion was bootstrapped by
`greenloop run --max-batches B` (not metered), and one warm-up arrival (batch B+1, not
metered: the first serve in a home creates the Prefect server's database, the first
retrain in a process pays torch's first optimizer), the service then quiet (wake:
waiting; serve: up and settled). Then batch B+2 is dropped in landing and
the CPU-seconds of the whole process tree (the root, its live descendants, and every
descendant that exited and was reaped: serve under wake, the Prefect server under serve,
DVC calls) are read from the drop until `--*-seconds` after it. What is reported:

- always on: the arrival (drop -> processed, with the settle second) and the idle rate
  after it (CPU-s per second over the rest of the window);
- wake: the whole cycle (serve's start-up, the arrival, serve idling until it stops,
  its shutdown), when serve stopped, and wake's own CPU-s while waiting before and after.

CPU-seconds are the measured quantity (kWh here would be CodeCarbon's load-times-constant
estimate of the serve process alone). Run it on an otherwise idle machine and read the
load average it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from served import QUIET, drop, free_port, greenloop, make_home, tree_cpu, wait_processed  # noqa: E402


def prepared_home(config: Path, workdir: Path) -> tuple[Path, Path, str, int]:
    """A home with the stream cut into batch files and the champion bootstrapped."""
    home, cfg_path = make_home(config, workdir)
    cfg = yaml.safe_load(cfg_path.read_text())
    boot = int(cfg["data"].get("bootstrap_batches", 4))
    env = {**os.environ, **QUIET}
    for args in (("prepare",), ("run", "--max-batches", str(boot))):
        subprocess.run(greenloop(*args, "--config", str(cfg_path), "--home", str(home)),
                       check=True, env=env, capture_output=True)
    model = f"{cfg['name']}-{cfg.get('policy', {}).get('name', 'gated')}"
    return home, cfg_path, model, boot


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **QUIET}, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float,
             count: int = 1) -> None:
    t0 = time.time()
    while log.read_text(errors="replace").count(text) < count:
        if proc.poll() is not None or time.time() - t0 > timeout_s:
            raise RuntimeError(f"no {text!r} in {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)


def always_on(config: Path, workdir: Path, window_s: float) -> dict[str, Any]:
    home, cfg_path, model, boot = prepared_home(config, workdir)
    log = workdir / "always-on.log"
    proc = start(greenloop("serve", "--config", str(cfg_path), "--home", str(home), "--port",
                           str(free_port())), log)
    try:
        wait_for(log, "watching ", proc, 300)
        root = psutil.Process(proc.pid)
        landing = home / "data" / "landing" / model.rsplit("-", 1)[0]
        stream = home / "data" / "stream" / landing.name
        drop(stream, landing, boot + 1)  # a warm-up arrival (torch's first optimizer...)
        wait_processed(home, model, {boot + 1}, 600)
        time.sleep(30)  # its window, the runner's registration and the first flushes settle
        c0 = tree_cpu(root)
        t_drop = drop(stream, landing, boot + 2)
        row = wait_processed(home, model, {boot + 2}, 600)[boot + 2]
        time.sleep(1.5)  # the settle second of the arrival's window
        c1, t1 = tree_cpu(root), time.time()
        time.sleep(max(window_s - (t1 - t_drop), 0.0))
        c2, t2 = tree_cpu(root), time.time()
    finally:
        stop(proc)
    return {"decision": row["decision"], "arrival_cpu_seconds": c1 - c0,
            "arrival_seconds": t1 - t_drop, "idle_cpu_seconds": c2 - c1,
            "idle_seconds": t2 - t1, "idle_cpu_seconds_per_second": (c2 - c1) / (t2 - t1),
            "window_cpu_seconds": c2 - c0, "window_seconds": t2 - t_drop}


def woken(config: Path, workdir: Path, window_s: float, quiet_before_s: float,
          idle_exit: str = "auto") -> dict[str, Any]:
    home, cfg_path, model, boot = prepared_home(config, workdir)
    landing = home / "data" / "landing" / model.rsplit("-", 1)[0]
    stream = home / "data" / "stream" / landing.name
    port = str(free_port())
    # A warm-up cycle (its own wake, stopping 10 s after): the first serve in a home also
    # creates the Prefect server's database, which no later start pays.
    warm_log = workdir / "wake-warm-up.log"
    warm = start(greenloop("wake", "--config", str(cfg_path), "--home", str(home), "--port",
                           port, "--idle-exit", "10"), warm_log)
    try:
        wait_for(warm_log, "waiting for files", warm, 120)
        drop(stream, landing, boot + 1)
        wait_for(warm_log, "serve stopped", warm, 600)
    finally:
        stop(warm)
    log = workdir / "wake.log"
    proc = start(greenloop("wake", "--config", str(cfg_path), "--home", str(home), "--port",
                           port, "--idle-exit", idle_exit), log)
    try:
        wait_for(log, "waiting for files", proc, 120)
        root = psutil.Process(proc.pid)
        c_before, t_before = tree_cpu(root), time.time()
        time.sleep(quiet_before_s)  # wake alone, waiting
        c0 = tree_cpu(root)
        waiting_before = {"cpu_seconds": c0 - c_before, "seconds": time.time() - t_before}
        t_drop = drop(stream, landing, boot + 2)
        row = wait_processed(home, model, {boot + 2}, 600)[boot + 2]
        latency = row["updated_at"] - t_drop
        wait_for(log, "serve stopped", proc, window_s)
        c1, t1 = tree_cpu(root), time.time()
        time.sleep(max(window_s - (t1 - t_drop), 0.0))
        c2, t2 = tree_cpu(root), time.time()
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.startswith(("start-up:", "idle for",
                                                              "serve stopped"))][-3:]
    return {"decision": row["decision"], "drop_to_processed_seconds": latency,
            "waiting_before": waiting_before, "cycle_cpu_seconds": c1 - c0,
            "cycle_seconds": t1 - t_drop, "waiting_after_cpu_seconds": c2 - c1,
            "waiting_after_seconds": t2 - t1, "window_cpu_seconds": c2 - c0,
            "window_seconds": t2 - t_drop, "serve_said": lines}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("configs/elec2.yaml"))
    ap.add_argument("--always-on-seconds", type=float, default=600)
    ap.add_argument("--wake-seconds", type=float, default=1200)
    ap.add_argument("--quiet-before-seconds", type=float, default=120)
    ap.add_argument("--only", choices=("always-on", "wake"))
    ap.add_argument("--idle-exit", default="auto", help="wake's rule (`auto` or seconds)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="greenloop-wake-"))
    out: dict[str, Any] = {"config": str(args.config), "nproc": os.cpu_count(),
                           "load_average_before": os.getloadavg()}
    if args.only != "wake":
        out["always_on"] = always_on(args.config.resolve(), workdir, args.always_on_seconds)
        print(json.dumps(out["always_on"], indent=1), flush=True)
    if args.only != "always-on":
        out["wake"] = woken(args.config.resolve(), workdir, args.wake_seconds,
                            args.quiet_before_seconds, args.idle_exit)
        print(json.dumps(out["wake"], indent=1), flush=True)
    out["load_average_after"] = os.getloadavg()
    out["workdir"] = str(workdir)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("load_average_before", "load_average_after")}))


if __name__ == "__main__":
    main()
