"""Fault injection for reliability tests: crash or fail the pipeline at named points.

Set `GREENLOOP_FAULTS` to a comma-separated list of rules; `checkpoint(point)` is
called at each point and applies the first rule that matches:

    train:kill          SIGKILL this process when it reaches `train`
    dvc:fail            raise InjectedFault at `dvc` (an ordinary exception)
    after_register:kill@2   only on the 2nd time this process reaches that point
    random:0.05         at every point, kill with probability 0.05
    random:0.05:fail    ... or raise instead of killing

Points (in the order one batch passes them): `ingest` (row received, accepted file not
yet written), `dvc` (inside the DVC lock, before `dvc add`), `observe`, `drift`, `train`
(inside the training phase, after training, before the phase is written), `register`
(before the MLflow run), `after_register` (a model version exists, the ledger and the
alias do not know it yet), `alias` (ledger moved, MLflow alias not yet). Unset, the
hook costs one dict lookup. Never set it in production.
"""

from __future__ import annotations

import os
import random
import signal

ENV = "GREENLOOP_FAULTS"
POINTS = ("ingest", "dvc", "observe", "drift", "train", "register", "after_register", "alias")

_hits: dict[str, int] = {}
_rng = random.Random()  # seeded from the OS: a re-run must not crash at the same place


class InjectedFault(RuntimeError):
    """An exception raised on purpose by a `fail` rule."""


def _parse(spec: str) -> list[tuple[str, str, float, int | None]]:
    rules = []
    for raw in filter(None, (s.strip() for s in spec.split(","))):
        parts = raw.split(":")
        if parts[0] == "random":
            if len(parts) < 2:
                raise ValueError(f"{ENV}: 'random' needs a probability, e.g. random:0.05")
            action = parts[2] if len(parts) > 2 else "kill"
            rules.append(("*", action, float(parts[1]), None))
            continue
        point, action = parts[0], parts[1] if len(parts) > 1 else "kill"
        nth = None
        if "@" in action:
            action, n = action.split("@", 1)
            nth = int(n)
        if point not in POINTS:
            raise ValueError(f"{ENV}: unknown point {point!r} (known: {', '.join(POINTS)})")
        rules.append((point, action, 1.0, nth))
    for _, action, _, _ in rules:
        if action not in ("kill", "fail"):
            raise ValueError(f"{ENV}: unknown action {action!r} (kill or fail)")
    return rules


def checkpoint(point: str) -> None:
    """Crash (SIGKILL) or fail here if GREENLOOP_FAULTS says so."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[point] = _hits.get(point, 0) + 1
    for where, action, probability, nth in _parse(spec):
        if where not in ("*", point):
            continue
        if nth is not None and _hits[point] != nth:
            continue
        if probability < 1.0 and _rng.random() >= probability:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"injected fault at {point!r} ({ENV}={spec})")
