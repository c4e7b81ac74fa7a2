"""Energy metering with CodeCarbon, beside CPU-seconds and wall time.

One `OfflineEmissionsTracker` per process measures phases as CodeCarbon tasks
(`start_task`/`stop_task`), and a second one meters a whole run, so the phases can be
checked against the total. On machines without RAPL or another power counter,
CodeCarbon estimates power from CPU load and constants; `method()` says which, and
every report carries that string. We never model energy ourselves.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from greenloop import proctree, timer
from greenloop.config import EnergyConfig

# `service`: in served mode, what an arrival's whole window cost beyond the other phases
# (task-run orchestration, the Prefect server's share); zero in a replay.
PHASES = ("ingest", "drift", "train", "evaluate", "overhead", "service")


@dataclass
class Reading:
    energy_kwh: float = 0.0
    emissions_kg: float = 0.0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __add__(self, other: Reading) -> Reading:
        return Reading(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def _cpu_seconds() -> float:
    """This process's user+system time plus that of its finished children (a DVC or git
    subprocess): CodeCarbon's process mode may count children too, so CPU-s must."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _tracker(cfg: EnergyConfig, measure_power_secs: float = 1) -> Any:
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    from codecarbon import OfflineEmissionsTracker

    # output_methods=[] and save_to_file=False: no emissions.csv in the working folder.
    t = OfflineEmissionsTracker(
        country_iso_code=cfg.country_iso_code, region=cfg.region, output_methods=[],
        save_to_file=False, allow_multiple_runs=True, log_level="error",
        measure_power_secs=measure_power_secs, tracking_mode="process",
    )
    proctree.speed_up(t)  # the same process tree, found without reading all of /proc
    timer.rearmable(t)  # no thread started per metered phase (greenloop/timer.py)
    return t


def tracker(cfg: EnergyConfig, measure_power_secs: float = 1) -> Any:
    """A CodeCarbon tracker configured as everywhere in greenloop. A task polls power
    every `measure_power_secs` in a thread: long idle windows use a slow poll."""
    return _tracker(cfg, measure_power_secs)


class Meter:
    """Meters named phases. Thread-safe: phases are serialized (CodeCarbon has one
    active task per tracker), which is also what makes their sum comparable to a total."""

    def __init__(self, cfg: EnergyConfig) -> None:
        self.cfg = cfg
        self._tracker: Any = None
        self._lock = threading.Lock()

    def _ensure(self) -> Any:
        if self._tracker is None:
            self._tracker = _tracker(self.cfg)
        return self._tracker

    @contextmanager
    def phase(self, name: str) -> Iterator[Reading]:
        """Yields a Reading that is filled in when the block exits (also on error)."""
        reading = Reading()
        with self._lock:
            tracker = self._ensure()
            tracker.start_task(name)
            cpu0, wall0 = _cpu_seconds(), time.perf_counter()
            try:
                yield reading
            finally:
                data = tracker.stop_task()
                forget_finished_tasks(tracker)
                reading.cpu_seconds = _cpu_seconds() - cpu0
                reading.wall_seconds = time.perf_counter() - wall0
                if data is not None:
                    reading.energy_kwh = float(data.energy_consumed)
                    reading.emissions_kg = float(data.emissions)

    def method(self) -> str:
        return describe_method(self._ensure())


def forget_finished_tasks(tracker: Any) -> None:  # noqa: ANN401 - CodeCarbon's tracker
    """CodeCarbon keeps every stopped task's emissions data for the tracker's life (~2.4
    kB a phase, measured) and renames a task whose name it already holds with a new
    uuid4: a served process metering four phases a batch grew by ~10 kB a batch, without
    end. The reading was returned by `stop_task`; nothing reads the kept copy."""
    tasks = getattr(tracker, "_tasks", None)
    if isinstance(tasks, dict) and getattr(tracker, "_active_task", None) is None:
        tasks.clear()


class RunMeter:
    """Meters a whole run with its own tracker (started once, stopped once)."""

    def __init__(self, cfg: EnergyConfig) -> None:
        self._tracker = _tracker(cfg)
        self._cpu0 = self._wall0 = 0.0
        self.reading: Reading | None = None  # set once the tracker has started

    def __enter__(self) -> RunMeter:
        self._tracker.start()
        self._cpu0, self._wall0 = _cpu_seconds(), time.perf_counter()
        self.reading = Reading()
        return self

    def __exit__(self, *exc: object) -> None:
        self._tracker.stop()
        data = self._tracker.final_emissions_data
        self.reading = Reading(float(data.energy_consumed), float(data.emissions),
                               _cpu_seconds() - self._cpu0, time.perf_counter() - self._wall0)


def describe_method(tracker: Any) -> str:
    """Which sources CodeCarbon used, from the tracker's own hardware objects."""
    import codecarbon

    parts = []
    for hw in getattr(tracker, "_hardware", []):
        mode = getattr(hw, "_mode", None) or getattr(hw, "_tracking_mode", None) or ""
        parts.append(f"{type(hw).__name__}{f'({mode})' if mode else ''}")
    found = ", ".join(parts) or "unknown hardware"
    return (f"CodeCarbon {codecarbon.__version__} OfflineEmissionsTracker "
            f"(country {tracker._country_iso_code}); power sources: {found}. Without RAPL "
            "or a power counter, CodeCarbon estimates CPU power from load and TDP constants "
            "and RAM power from a constant, so kWh track CPU-seconds and wall time.")
