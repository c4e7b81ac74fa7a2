"""Prefect events: a batch arrived (from the watcher), a batch was accepted (from ingest).

Deployment triggers in flows/deploy.py match on these names and on the resource labels
`greenloop.dataset` / `greenloop.model`, so one Prefect server can serve many models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from prefect.events import emit_event

from greenloop.watch import LandingWatcher
from greenloop.workspace import Workspace

ARRIVED = "greenloop.batch.arrived"
ACCEPTED = "greenloop.batch.accepted"


def emit_arrived(path: Path, dataset: str, size_bytes: int) -> None:
    emit_event(event=ARRIVED,
               resource={"prefect.resource.id": f"greenloop.file.{dataset}.{path.name}",
                         "greenloop.dataset": dataset},
               payload={"path": str(path), "dataset": dataset, "size_bytes": size_bytes})


def emit_accepted(dataset: str, model: str, digest: str, seq: int) -> None:
    emit_event(event=ACCEPTED,
               resource={"prefect.resource.id": f"greenloop.batch.{digest[:24]}",
                         "greenloop.dataset": dataset, "greenloop.model": model},
               payload={"hash": digest, "seq": seq, "model": model, "dataset": dataset})


def watch_landing(datasets: list[str], home: Path, poll_seconds: float = 1.0,
                  stop: threading.Event | None = None, log: Callable[[str], None] = print) -> None:
    """Emit `greenloop.batch.arrived` once per complete file in data/landing/<dataset>/
    (the completeness rule is greenloop/watch.py). Runs until `stop` is set."""
    ws = Workspace.from_env(home)
    watchers = []
    for name in datasets:
        folder = ws.landing(name)
        folder.mkdir(parents=True, exist_ok=True)
        watchers.append((name, LandingWatcher(folder, ws.state / "watch" / f"{name}.json")))
        log(f"watching {folder}")
    stop = stop or threading.Event()
    while not stop.is_set():
        for name, watcher in watchers:
            for path in watcher.poll():
                size = path.stat().st_size if path.exists() else 0
                emit_arrived(path, name, size)
                log(f"{ARRIVED}: {path} ({size} bytes)")
        stop.wait(poll_seconds)
