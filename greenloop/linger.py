"""When an idle `greenloop serve` should stop: the ski-rental rule.

A warm service pays for every idle second (Prefect's server polls its queues even with
nothing to do), a stopped one pays its whole start-up again at the next arrival. Neither
side knows when that arrival comes. The classic answer (ski rental): stay up while idle
until the idle time has cost as much as one start-up, then stop. Whatever the gaps
between arrivals turn out to be, that never costs more than twice what the best choice
in hindsight would have cost, and it needs no forecast of the arrivals.

Both costs are measured by the service itself, in CPU-seconds of its process tree: the
start-up it paid this time, and the idle rate of the current idle stretch (so a busier or
quieter machine moves the linger with it). Pure: the caller reads the meters.
"""

from __future__ import annotations

from dataclasses import dataclass

# An idle rate is read over at least this long before it is trusted: Prefect's server
# wakes in bursts of a few seconds (its services loop every 5-60 s).
MIN_MEASURE_SECONDS = 60.0


@dataclass(frozen=True)
class Linger:
    """`fixed_seconds`: stop after that long idle; None: the ski-rental rule."""

    fixed_seconds: float | None = None
    min_measure_seconds: float = MIN_MEASURE_SECONDS

    def seconds(self, startup_cpu_seconds: float, idle_cpu_seconds: float,
                measured_seconds: float) -> float | None:
        """How long to stay up idle, from the idle CPU-s spent over `measured_seconds`;
        None while the idle rate is not measured long enough."""
        if self.fixed_seconds is not None:
            return self.fixed_seconds
        if measured_seconds < self.min_measure_seconds:
            return None
        rate = max(idle_cpu_seconds, 0.0) / measured_seconds
        if rate <= 0.0:  # nothing measurable spent idle: staying up is free
            return float("inf")
        return max(startup_cpu_seconds, 0.0) / rate

    def should_stop(self, startup_cpu_seconds: float, idle_cpu_seconds: float,
                    measured_seconds: float, idle_seconds: float) -> bool:
        """Idle for `idle_seconds` so far (the rate measured over the last part of it)."""
        linger = self.seconds(startup_cpu_seconds, idle_cpu_seconds, measured_seconds)
        return linger is not None and idle_seconds >= linger


def gap_cpu_seconds(gap_seconds: float, startup_cpu_seconds: float,
                    idle_cpu_per_second: float) -> tuple[float, float]:
    """What one quiet gap between arrivals costs (CPU-s), as (always on, `auto`): always
    on idles through it; `auto` idles until the linger (start-up / idle rate) and then,
    if the gap outlasts it, pays one start-up for the next arrival. Arithmetic on two
    measured rates, not a measurement of the gap itself."""
    rate, startup = max(idle_cpu_per_second, 0.0), max(startup_cpu_seconds, 0.0)
    always_on = rate * gap_seconds
    if rate <= 0.0:
        return always_on, always_on
    linger = startup / rate
    if gap_seconds <= linger:
        return always_on, always_on
    return always_on, rate * linger + startup


def parse_linger(text: str) -> Linger:
    """`auto` (the ski-rental rule) or a number of seconds > 0."""
    if text.strip().lower() == "auto":
        return Linger()
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"--idle-exit wants `auto` or a number of seconds, not {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"--idle-exit wants a finite number of seconds > 0, not {text!r}")
    return Linger(fixed_seconds=seconds)


__all__ = ["MIN_MEASURE_SECONDS", "Linger", "gap_cpu_seconds", "parse_linger"]
