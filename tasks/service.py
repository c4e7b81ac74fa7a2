"""The served mode's meter: each arrival's whole window and the service's idle time.

One CodeCarbon tracker for the service (separate from the per-phase meter), measuring
alternately "idle" and "arrival" windows as CodeCarbon tasks, so the session's reading
is the sum of both and nothing falls between them; CPU-seconds come from the process
tree (greenloop/service.py: this process and the Prefect server it started).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from greenloop.config import EnergyConfig
from greenloop.energy import describe_method, forget_finished_tasks, tracker
from greenloop.ledger import Ledger
from greenloop.service import ProcessTree, Window, record_session

# A task's power monitor thread polls at this period: idle windows last minutes.
IDLE_POLL_SECONDS = 30
FLUSH_SECONDS = 120  # the session row is rewritten this often (status reads it)


class ServiceMeter:
    def __init__(self, energy: EnergyConfig, ledgers: list[Ledger], pids: list[int]) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.tree = ProcessTree(pids)
        self.ledgers = ledgers
        self._tracker: Any = tracker(energy, IDLE_POLL_SECONDS)
        self._lock = threading.RLock()
        self._slot = threading.Semaphore(1)  # one open arrival window at a time
        self._open: tuple[str, float, float] | None = None  # (key, tree CPU-s, wall) at begin
        self.started_at = time.time()
        self.startup_cpu_seconds: float | None = None  # set by serve once it serves
        self.whole, self.batches, self.n_batches = Window(), Window(), 0
        self._cpu0, self._wall0 = self.tree.cpu_seconds(), time.perf_counter()
        self._tracker.start_task("idle")
        # Called with (whole, arrivals, n arrivals, stopped) at every flush (MLflow runs).
        self.on_flush: list[Callable[[Window, Window, int, bool], None]] = []
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="greenloop-service-meter",
                                         daemon=True)
        self._flusher.start()

    def _switch(self, name: str) -> tuple[float, float]:
        """Close the running CodeCarbon task, open `name`; returns the closed task's
        (kWh, kg)."""
        data = self._tracker.stop_task()
        forget_finished_tasks(self._tracker)  # two windows an arrival, for months
        self._tracker.start_task(name)
        if data is None:
            return 0.0, 0.0
        return float(data.energy_consumed), float(data.emissions)

    def _add_whole(self, kwh: float, kg: float) -> None:
        self.whole.energy_kwh += kwh
        self.whole.emissions_kg += kg

    def begin(self, key: str, wait_s: float = 900.0) -> bool:
        """Open the window of arrival `key` before it is handed to the task worker, so the
        hand-over (the task run's creation, the server's push) is on its bill. Windows do
        not overlap: the next arrival waits until this one's window is closed (or until
        `wait_s`, after which it goes unmetered: a lost arrival must not block the watcher)."""
        if not self._slot.acquire(timeout=wait_s):
            return False
        with self._lock:
            self._add_whole(*self._switch("arrival"))
            self._open = (key, self.tree.cpu_seconds(), time.perf_counter())
        return True

    def is_open(self, key: str) -> bool:
        return self._open is not None and self._open[0] == key

    def end_later(self, key: str, on_closed: Callable[[Window], None],
                  settle_s: float = 1.0) -> None:
        """Close the window `settle_s` after the task's function returned: the task run's
        final state, its result and its logs are shipped in that second, and are the
        arrival's cost too. `on_closed(window)` then records the bill."""
        threading.Timer(settle_s, self._end, (key, on_closed)).start()

    def cancel(self, key: str) -> None:
        """The hand-over failed: close the window without a bill (its cost stays idle)."""
        self._end(key, None)

    def _end(self, key: str, on_closed: Callable[[Window], None] | None) -> None:
        with self._lock:
            if not self.is_open(key):
                return
            assert self._open is not None
            _, cpu0, wall0 = self._open
            self._open = None
            kwh, kg = self._switch("idle")
            self._add_whole(kwh, kg)
            window = Window(energy_kwh=kwh, emissions_kg=kg,
                            cpu_seconds=self.tree.cpu_seconds() - cpu0,
                            wall_seconds=time.perf_counter() - wall0)
            self.batches = self.batches + window
            self.n_batches += 1
        self._slot.release()
        if on_closed is not None:
            on_closed(window)

    def flush(self, stopped: bool = False) -> None:
        with self._lock:
            self._add_whole(*self._switch("idle"))
            self.whole.cpu_seconds = self.tree.cpu_seconds() - self._cpu0
            self.whole.wall_seconds = time.perf_counter() - self._wall0
            counted = (f"CPU-s: {self.tree.describe()}; kWh: CodeCarbon process mode on the "
                       "serve process and its children")
            for ledger in self.ledgers:
                record_session(ledger, self.id, self.started_at, self.whole, self.batches,
                               self.n_batches, describe_method(self._tracker), counted, stopped,
                               self.startup_cpu_seconds)
            for callback in self.on_flush:
                try:
                    callback(self.whole, self.batches, self.n_batches, stopped)
                except Exception as e:  # noqa: BLE001 - MLflow down: the ledger has it
                    print(f"service meter: could not report the session ({e})")

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush(stopped=True)
        self._tracker.stop_task()
