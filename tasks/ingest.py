"""Ingest: validate an arrived file, version it with DVC, record it in the ledger.

Rejected files go to data/quarantine/<dataset>/ with a `.reason.txt` beside them;
nothing about the model in service changes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from greenloop.data import BatchRejected, content_hash, read_table, validate_batch
from greenloop.workspace import OutsideWorkspace
from tasks.runtime import Runtime
from tasks.versioning import dvc_add, ensure_repo


@dataclass(frozen=True)
class Ingested:
    digest: str
    seq: int
    status: str  # accepted, or the status a duplicate already had
    duplicate: bool


def resolve_arrival(rt: Runtime, path: str) -> Path:
    """Only files inside data/ are read: no traversal, no symlink out of the data folder."""
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = rt.ws.home / candidate
    if candidate.is_symlink():
        raise BatchRejected(f"{candidate.name}: symbolic links are not accepted")
    try:
        resolved = rt.ws.inside(rt.ws.data, candidate)
    except OutsideWorkspace as e:
        raise BatchRejected(str(e)) from e
    if not resolved.is_file():
        raise BatchRejected(f"{candidate.name}: no such file")
    return resolved


def quarantine(rt: Runtime, path: str, digest: str | None, reason: str) -> Path:
    """Move (from landing) or copy (from elsewhere in data/) the file aside, with its
    reason. A file outside data/ is never touched: only the reason is written."""
    folder = rt.ws.quarantine(rt.cfg.name)
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(path).name or "batch"
    try:
        src: Path | None = resolve_arrival(rt, path)
    except BatchRejected:
        src = None
    target = folder / name
    if src is not None:
        if rt.ws.landing(rt.cfg.name).resolve() in src.parents:
            shutil.move(str(src), target)
        else:
            shutil.copyfile(src, target)
    (folder / f"{name}.reason.txt").write_text(reason + "\n")
    rt.ledger.quarantined(rt.cfg.name, path, digest, reason)
    return target


@task(name="ingest", cache_policy=NONE)
def ingest_batch(rt: Runtime, path: str) -> Ingested:
    try:
        with rt.meter.phase("ingest") as reading:
            return _ingest(rt, path)
    finally:
        rt.ledger.add_energy(rt.model_name, None, "ingest", reading.as_dict())


def _ingest(rt: Runtime, path: str) -> Ingested:
    digest: str | None = None
    try:
        arrival = resolve_arrival(rt, path)
        digest = content_hash(arrival)
        frame = validate_batch(read_table(arrival), rt.schema, rt.cfg.data)
    except BatchRejected as e:
        quarantine(rt, path, digest, str(e))
        raise
    seq, status = rt.ledger.receive(rt.model_name, digest, str(arrival))
    if status != "received":
        return Ingested(digest, seq, status, duplicate=True)
    accepted = rt.ws.accepted(rt.cfg.name) / f"{digest[:24]}.parquet"
    if not accepted.exists():
        accepted.parent.mkdir(parents=True, exist_ok=True)
        tmp = accepted.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(accepted)  # atomic: a crash never leaves half a batch
    ensure_repo(rt.ws.home)
    md5 = dvc_add(rt.ws.home, accepted)
    rt.ledger.update_batch(rt.model_name, digest, status="accepted", rows=len(frame),
                           accepted_path=str(accepted.relative_to(rt.ws.home)), dvc_md5=md5)
    return Ingested(digest, seq, "accepted", duplicate=False)
