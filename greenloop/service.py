"""The served mode's whole bill: what a batch makes the machine do, and what the service
costs standing idle.

`greenloop serve` is one long-lived process (the Prefect runner, the task worker that
processes arrivals, the landing watcher) plus the Prefect server it starts. Metering only
the pipeline's phases would leave out the orchestration around them (task-run API calls,
the server handling them) and the service's idle cost. So:

- per arrival, `ProcessTree` CPU-seconds of the serve process and the Prefect server
  process tree over the arrival's window (all threads, all children), and a CodeCarbon
  reading of the same window; the part not already metered by a phase is recorded as the
  phase `service` of that batch, so the batch's phases add up to its whole window;
- per service session, the same two meters from start to stop, written to the
  ledger's `service_sessions` table every minute and at stop: idle = session - sum of arrivals.

The MLflow UI (`greenloop ui` / `serve --ui`) is a separate process tree and is not on
this bill: it serves humans, not batches (its idle cost is reported by the benchmark).
Pure bookkeeping on psutil and the ledger: no Prefect or MLflow here.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import psutil

from greenloop import proctree
from greenloop.energy import Reading
from greenloop.ledger import Ledger


class ProcessTree:
    """CPU-seconds (user + system) of a set of root processes and all their children.

    Children that exited are counted through their parent's `children_*` times only once
    reaped; a child that exits between two readings is lost, so the roots here are
    long-lived servers whose children live as long as they do.
    """

    def __init__(self, pids: list[int]) -> None:
        self.roots: list[psutil.Process] = [proctree.Process(p) for p in pids]

    def cpu_seconds(self) -> float:
        total, seen = 0.0, set()
        for root in self.roots:
            for p in [root, *self._children(root)]:
                if p.pid in seen:  # a root that is also another root's child counts once
                    continue
                seen.add(p.pid)
                try:
                    t = p.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += t.user + t.system
                if p is root:  # reaped children of the root (e.g. short DVC calls)
                    total += t.children_user + t.children_system
        return total

    @staticmethod
    def _children(root: psutil.Process) -> list[psutil.Process]:
        try:
            return root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return []

    def describe(self) -> str:
        names = []
        for root in self.roots:
            try:
                names.append(f"{root.name()}[{root.pid}]+children")
            except psutil.NoSuchProcess:
                names.append(f"[{root.pid}] (gone)")
        return ", ".join(names)


# One metered window (an arrival, the idle time, a session): a Reading, as a phase is.
Window = Reading


def record_session(ledger: Ledger, session_id: str, started_at: float, whole: Window,
                   batches: Window, n_batches: int, method: str, counted: str,
                   stopped: bool = False, startup_cpu_seconds: float | None = None) -> None:
    now = time.time()
    with ledger.transaction() as c:
        c.execute(
            "INSERT INTO service_sessions (id, started_at, updated_at, stopped_at, wall_seconds,"
            " cpu_seconds, energy_kwh, emissions_kg, batch_cpu_seconds, batch_energy_kwh,"
            " batch_wall_seconds, batches, energy_method, counted, startup_cpu_seconds)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
            " updated_at=excluded.updated_at, stopped_at=excluded.stopped_at,"
            " wall_seconds=excluded.wall_seconds, cpu_seconds=excluded.cpu_seconds,"
            " energy_kwh=excluded.energy_kwh, emissions_kg=excluded.emissions_kg,"
            " batch_cpu_seconds=excluded.batch_cpu_seconds,"
            " batch_energy_kwh=excluded.batch_energy_kwh,"
            " batch_wall_seconds=excluded.batch_wall_seconds, batches=excluded.batches,"
            " startup_cpu_seconds=excluded.startup_cpu_seconds",
            (session_id, started_at, now, now if stopped else None, whole.wall_seconds,
             whole.cpu_seconds, whole.energy_kwh, whole.emissions_kg, batches.cpu_seconds,
             batches.energy_kwh, batches.wall_seconds, n_batches, method, counted,
             startup_cpu_seconds))


@dataclass(frozen=True)
class IdleCost:
    sessions: int
    hours: float  # wall time of the sessions
    idle_hours: float  # the same minus the arrivals' windows
    idle_energy_kwh: float
    idle_cpu_seconds: float
    batches: int
    startup_cpu_seconds: float | None = None  # the median of the sessions that recorded it

    @property
    def idle_kwh_per_hour(self) -> float:
        return self.idle_energy_kwh / self.idle_hours if self.idle_hours else float("nan")

    @property
    def idle_cpu_share_of_core(self) -> float:
        return self.idle_cpu_seconds / (self.idle_hours * 3600) if self.idle_hours else float("nan")

    @property
    def idle_kwh_per_batch(self) -> float:
        return self.idle_energy_kwh / self.batches if self.batches else float("nan")


def idle_cost(ledger: Ledger) -> IdleCost | None:
    """Standing cost over every recorded service session (None: never served here)."""
    rows = ledger.query("SELECT * FROM service_sessions")
    if not rows:
        return None
    wall = sum(r["wall_seconds"] or 0 for r in rows)
    busy = sum(r["batch_wall_seconds"] or 0 for r in rows)
    return IdleCost(
        sessions=len(rows), hours=wall / 3600, idle_hours=max(wall - busy, 0.0) / 3600,
        idle_energy_kwh=sum(max((r["energy_kwh"] or 0) - (r["batch_energy_kwh"] or 0), 0.0)
                            for r in rows),
        idle_cpu_seconds=sum(max((r["cpu_seconds"] or 0) - (r["batch_cpu_seconds"] or 0), 0.0)
                             for r in rows),
        batches=sum(r["batches"] or 0 for r in rows),
        startup_cpu_seconds=_median([r["startup_cpu_seconds"] for r in rows
                                     if r["startup_cpu_seconds"] is not None]))


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


__all__ = ["IdleCost", "ProcessTree", "Window", "idle_cost", "record_session"]
