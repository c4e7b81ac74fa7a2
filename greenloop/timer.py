"""A periodic call on one long-lived thread, armed and disarmed without starting threads.

CodeCarbon's `PeriodicScheduler` starts a new `threading.Timer` each time it is started.
A tracker starts its 1-second power monitor at every `start_task`, so every metered
phase (four per skipped batch) created and discarded a thread: ~0.24 ms of CPU and more
of wall time waiting for the new thread to take the GIL, in a process with ~30 threads.
`RearmableTimer` keeps CodeCarbon's interface (`start`, `stop`, `_stopped`) and when the
function runs (every `interval` seconds while started, first one `interval` after
`start`), on a thread that waits while disarmed and exits after a minute unused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

IDLE_EXIT_SECONDS = 60.0  # a disarmed timer's thread ends; the next start makes another


class RearmableTimer:
    def __init__(self, interval: float, function: Callable[..., Any], *args: Any,
                 name: str = "greenloop-timer", **kwargs: Any) -> None:
        self.interval, self.name = interval, name
        self.function, self.args, self.kwargs = function, args, kwargs
        self._stopped = True  # read by CodeCarbon: whether a task paused a running one
        self._armings = 0  # which arming a wait belongs to: a stop and start resets it
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self, from_run: bool = False) -> None:
        """Arm: the function runs `interval` seconds from now, then every `interval`."""
        with self._cond:
            if not self._stopped:
                return
            self._stopped = False
            self._armings += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=self.name)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        """Disarm; a call already running finishes."""
        with self._cond:
            self._stopped = True

    def _loop(self) -> None:
        while (arming := self._next_arming()) is not None:
            due = time.monotonic() + self.interval
            while (due := self._wait_until(due, arming)) is not None:
                self.function(*self.args, **self.kwargs)

    def _next_arming(self) -> int | None:
        """Wait to be armed; None (and the thread ends) after a long disarmed wait."""
        with self._cond:
            if self._stopped and not self._cond.wait_for(lambda: not self._stopped,
                                                         IDLE_EXIT_SECONDS):
                self._thread = None
                return None
            return self._armings

    def _wait_until(self, due: float, arming: int) -> float | None:
        """Wait for `due`; the next due time if the timer is still in the same arming
        then, None if it was disarmed (or disarmed and armed again) meanwhile."""
        with self._cond:
            while self._armings == arming and not self._stopped:
                left = due - time.monotonic()
                if left <= 0:
                    return due + self.interval
                self._cond.wait(left)
            return None


def rearmable(tracker: Any) -> bool:
    """Give a CodeCarbon tracker's two schedulers (periodic measure, power monitor)
    rearmable timers with the same interval and function. True when both were found
    (CodeCarbon 3.3's attribute names) and idle; otherwise the tracker is unchanged."""
    names = ("_scheduler", "_scheduler_monitor_power")
    olds = [getattr(tracker, n, None) for n in names]
    if not all(o is not None and getattr(o, "_stopped", False) and hasattr(o, "function")
               for o in olds):
        return False
    for name, old in zip(names, olds, strict=True):
        setattr(tracker, name, RearmableTimer(old.interval, old.function, *old.args,
                                              **old.kwargs))
    return True
