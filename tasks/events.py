"""Prefect events: a batch arrived (from the watcher), a batch was accepted (from ingest).

Deployment triggers in flows/deploy.py match on these names and on the resource labels
`greenloop.dataset` / `greenloop.model`, so one Prefect server can serve many models.
"""

from __future__ import annotations

import asyncio
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


def arrived_trigger_name(dataset: str) -> str:
    """The name of the automation that turns an arrival into an `ingest` run."""
    return f"{dataset}: batch arrived"


async def _listening(datasets: list[str]) -> list[str]:
    from prefect import get_client

    async with get_client() as client:
        names = {a.name for a in await client.read_automations() if a.enabled}
    return [d for d in datasets if arrived_trigger_name(d) not in names]


def wait_for_listeners(datasets: list[str], stop: threading.Event, poll_seconds: float,
                       log: Callable[[str], None]) -> None:
    """Events nobody listens to are dropped by the server: wait until each dataset's
    `ingest` trigger exists (serve or deploy registers it) before reporting any file."""
    announced = False
    while not stop.is_set():
        missing = asyncio.run(_listening(datasets))
        if not missing:
            return
        if not announced:
            log(f"waiting for the ingest trigger(s) of {', '.join(missing)} "
                "(greenloop serve / greenloop deploy)")
            announced = True
        stop.wait(poll_seconds)


Report = Callable[[Path, str, int], None]  # (file, dataset, size in bytes)


def watch_landing(datasets: list[str], home: Path, poll_seconds: float = 1.0,
                  stop: threading.Event | None = None, log: Callable[[str], None] = print,
                  report: Report | None = None,
                  unaccounted: Callable[[str, list[Path]], set[str]] | None = None) -> None:
    """Report each complete file in data/landing/<dataset>/ once (the completeness rule is
    greenloop/watch.py), until `stop` is set. By default a report is the event
    `greenloop.batch.arrived` (for event-triggered deployments: wait until their trigger
    exists); `serve` passes its own (`flows.warm.submit`). `unaccounted(dataset, files)`
    names files already reported once that have neither a ledger nor a quarantine row:
    they are reported again (a report lost in a crash or an outage)."""
    ws = Workspace.from_env(home)
    stop = stop or threading.Event()
    if report is None:
        wait_for_listeners(datasets, stop, max(poll_seconds, 1.0), log)
        report = emit_arrived
    watchers = []
    for name in datasets:
        folder = ws.landing(name)
        folder.mkdir(parents=True, exist_ok=True)
        watcher = LandingWatcher(folder, ws.state / "watch" / f"{name}.json")
        if unaccounted is not None:
            lost = unaccounted(name, watcher.candidates())
            if lost:
                log(f"rescan: {len(lost)} file(s) in {folder} with no ledger or quarantine "
                    f"row are reported again: {', '.join(sorted(lost)[:5])}")
            watcher.forget(lost)
        watchers.append((name, watcher))
        log(f"watching {folder}")
    while not stop.is_set():
        for name, watcher in watchers:
            for path in watcher.poll():
                size = path.stat().st_size if path.exists() else 0
                try:
                    report(path, name, size)
                except Exception as e:  # noqa: BLE001 - the file is reported again later
                    watcher.forget({path.name})
                    log(f"could not report {path.name} ({type(e).__name__}: {e}); retrying")
                    continue
                log(f"arrived: {path} ({size} bytes)")
        stop.wait(poll_seconds)
