"""`greenloop wake` and `serve --idle-exit`: a service that costs nothing between arrivals.

A warm `serve` idles at 1.5-2% of a core (mostly Prefect's server polling its queues):
for batches that arrive weekly, its idle hours cost far more than the batches. So:

- `serve --idle-exit auto` stops itself once it has been idle long enough that the idle
  time cost as much as its own start-up (the ski-rental rule, greenloop/linger.py); a
  number of seconds instead of `auto` fixes the wait;
- `greenloop wake` waits in the kernel (inotify, greenloop/wake.py) on the landing folders
  with nothing loaded, starts `serve --idle-exit ...` when a file lands and, when that
  serve has stopped, waits again.

Registered on the Typer app of greenloop_cli/main.py. Nothing heavy is imported at
module level: `wake` stays a small process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from greenloop.linger import Linger, parse_linger
from greenloop.service import ProcessTree
from greenloop.workspace import Workspace
from greenloop_cli.main import HomeOpt, PolicyOpt, _check_config, _fail, app

IdleExitOpt = Annotated[str | None, typer.Option(
    help="stop when idle: `auto` (once idle time has cost one start-up) or seconds")]
CHECK_SECONDS = 5.0  # how often the idle monitor looks
FAILURES_IN_A_ROW = 3  # serve exiting non-zero this often: wake gives up


def linger_option(text: str | None) -> Linger | None:
    if text is None:
        return None
    try:
        return parse_linger(text)
    except ValueError as e:
        _fail(str(e), 2)
        raise  # unreachable: _fail raises


def stop_when_idle(linger: Linger, tree: ProcessTree, startup_cpu_seconds: float,
                   stop_watching: threading.Event, watcher_poll_seconds: float,
                   other_pids: set[int], log: Callable[[str], None] = typer.echo
                   ) -> threading.Thread:
    """A daemon thread that ends this serve with SIGTERM (the way `systemctl stop` does)
    once `linger` says so. The watcher is stopped first and the last arrival let finish,
    so nothing is cut mid-update; a file that lands after that waits for `wake`."""
    from flows.warm import ACTIVITY

    ACTIVITY.end_startup()

    def run() -> None:
        stretch: tuple[float, float, float] | None = None  # (idle since, tree CPU-s, t0)
        while True:
            time.sleep(CHECK_SECONDS)
            since, now = ACTIVITY.idle_since(), time.monotonic()
            if since is None:
                stretch = None
                continue
            if stretch is None or stretch[0] != since:  # a new idle stretch: measure it
                stretch = (since, tree.cpu_seconds(), now)
                continue
            idle_cpu, measured = tree.cpu_seconds() - stretch[1], now - stretch[2]
            if (not linger.should_stop(startup_cpu_seconds, idle_cpu, measured, now - since)
                    or _runs_in_progress(other_pids)):
                continue
            rule = (f"{linger.fixed_seconds:g} s" if linger.fixed_seconds is not None else
                    f"start-up {startup_cpu_seconds:.1f} CPU-s / idle "
                    f"{idle_cpu / measured:.4f} CPU-s per s")
            log(f"idle for {now - since:.0f} s ({rule}): stopping; `greenloop wake` starts "
                f"serve again at the next file")
            stop_watching.set()
            time.sleep(watcher_poll_seconds + 1.0)  # a hand-over in the watcher's last poll
            while ACTIVITY.idle_since() is None:  # ... runs to its end
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)
            return

    thread = threading.Thread(target=run, name="greenloop-idle-exit", daemon=True)
    thread.start()
    return thread


def _runs_in_progress(other_pids: set[int]) -> bool:
    """A child process of serve that is not a server it started: a deployment's flow run
    (the runner starts one per run), which an exit would cut off."""
    import psutil

    try:
        children = psutil.Process().children(recursive=False)
    except psutil.Error:
        return False
    return any(c.pid not in other_pids for c in children)


@app.command()
def wake(config: Annotated[list[Path], typer.Option("--config", "-c", help="dataset config(s)")],
         policy: PolicyOpt = None, home: HomeOpt = None,
         port: Annotated[int, typer.Option(help="port of the Prefect server serve starts")] = 4200,
         idle_exit: Annotated[str, typer.Option(
             help="passed to serve: `auto` or seconds idle before it stops")] = "auto") -> None:
    """Wait for files in data/landing/<dataset>/ with nothing loaded; start `serve
    --idle-exit` when one lands, wait again when it stops."""
    for c in config:
        _check_config(c)
    linger_option(idle_exit)  # refused here, not by every serve started later
    from greenloop.config import load_config
    from greenloop.wake import FolderWaiter, unreported

    ws = Workspace.from_env(home)
    folders = {name: ws.landing(name) for name in (load_config(c).name for c in config)}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    waiter = FolderWaiter(list(folders.values()))
    cmd = [sys.executable, "-m", "greenloop_cli", "serve", "--home", str(ws.home),
           "--port", str(port), "--idle-exit", idle_exit,
           *[a for c in config for a in ("--config", str(c))],
           *(["--policy", policy] if policy else [])]
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        if child and child[0].poll() is None:
            child[0].send_signal(signum)  # serve stops cleanly; wake exits after it
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward)
    typer.echo(f"waiting for files in {', '.join(str(f) for f in folders.values())} "
               f"({waiter.method}); Ctrl-C to stop")
    failures = 0
    try:
        while True:
            new = [n for d, f in folders.items()
                   for n in unreported(f, ws.state / "watch" / f"{d}.json")]
            if not new:
                waiter.wait()
                continue
            typer.echo(f"{len(new)} new file(s) ({', '.join(new[:3])}"
                       f"{', ...' if len(new) > 3 else ''}): starting serve")
            started = time.monotonic()
            child[:] = [subprocess.Popen(cmd)]
            code = child[0].wait()
            typer.echo(f"serve stopped (exit {code}) after {time.monotonic() - started:.0f} s")
            failures = failures + 1 if code != 0 else 0
            if failures >= FAILURES_IN_A_ROW:
                _fail(f"serve exited non-zero {failures} times in a row: see its output above")
            time.sleep(2.0 * failures)  # a failing serve is not restarted in a tight loop
    except KeyboardInterrupt:
        if child and child[0].poll() is None:
            child[0].wait()
    finally:
        waiter.close()
