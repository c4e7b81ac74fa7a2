"""Ingest: validate an arrived file, version it with DVC, record it in the ledger.

Rejected files go to data/quarantine/<dataset>/ with a `.reason.txt` beside them;
nothing about the model in service changes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from greenloop.columnar import to_arrow
from greenloop.data import BatchRejected, content_hash, read_table, validate_batch
from greenloop.faults import checkpoint
from greenloop.locks import model_lock
from greenloop.workspace import OutsideWorkspace
from tasks import handoff
from tasks.quoted import quoted_task
from tasks.runtime import Runtime
from tasks.versioning import dvc_add, ensure_repo


@dataclass(frozen=True)
class Ingested:
    digest: str
    seq: int
    status: str  # accepted, or the status a duplicate already had
    duplicate: bool


def arrival_roots(rt: Runtime) -> tuple[Path, ...]:
    """Where arrivals may come from: data/landing/ (anything that is dropped in), and the
    replay's own stream folder of this dataset (written by the pipeline itself)."""
    return (rt.ws.data / "landing", rt.ws.stream(rt.cfg.name))


def resolve_arrival(rt: Runtime, path: str) -> Path:
    """Only regular files under data/landing/ (or the replay stream) are read: no
    traversal, no symbolic link, nothing elsewhere in data/ or outside it."""
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = rt.ws.home / candidate
    if candidate.is_symlink():
        raise BatchRejected(f"{candidate.name}: symbolic links are not accepted")
    for root in arrival_roots(rt):
        try:
            resolved = rt.ws.inside(root, candidate)
            break
        except OutsideWorkspace:
            continue
    else:
        raise BatchRejected(f"{_safe_name(path)}: outside {rt.ws.data / 'landing'} "
                            f"(arrivals must be dropped in data/landing/)")
    if not resolved.is_file():
        raise BatchRejected(f"{candidate.name}: no such file")
    return resolved


def _safe_name(path: str) -> str:
    """A file name safe to write in the quarantine folder, whatever `path` says."""
    name = Path(str(path)).name
    return name if name not in ("", ".", "..") and not name.startswith(".") else "batch"


def quarantine(rt: Runtime, path: str, digest: str | None, reason: str) -> Path:
    """Move (from landing) or copy (from elsewhere in data/) the file aside, with its
    reason. A file outside data/ is never touched: only the reason is written."""
    folder = rt.ws.quarantine(rt.cfg.name)
    folder.mkdir(parents=True, exist_ok=True)
    name = _safe_name(path)
    try:
        src: Path | None = resolve_arrival(rt, path)
    except BatchRejected:
        src = None
    target = free_name(folder, name, digest)
    if src is not None:
        if rt.ws.landing(rt.cfg.name).resolve() in src.parents:
            shutil.move(str(src), target)
        else:
            shutil.copyfile(src, target)
    (folder / f"{target.name}.reason.txt").write_text(reason + "\n")
    rt.ledger.quarantined(rt.cfg.name, path, digest, reason)
    return target


def free_name(folder: Path, name: str, digest: str | None) -> Path:
    """`folder/name`, or if an earlier reject has that name (or its reason file),
    `name` with the content hash (or a counter) before its suffix: never overwrite one."""
    def taken(p: Path) -> bool:
        return p.exists() or p.with_name(f"{p.name}.reason.txt").exists()

    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    if taken(target) and digest:
        target = folder / f"{stem}.{digest[:12]}{suffix}"
    n = 1
    while taken(target):
        target = folder / f"{stem}.{n}{suffix}"
        n += 1
    return target


def durable_write(frame: pd.DataFrame, path: Path) -> None:
    """Write `path` atomically and durably: the Parquet bytes and the rename reach the
    disk before the caller records the batch as `accepted`, so a machine crash (power,
    kernel) cannot leave an accepted row pointing at an empty or missing file.

    The update learns only from the bytes DVC versioned: a file damaged after acceptance
    fails its update (retried, then dead-lettered) instead of training on a copy in
    memory. The frame written here is handed over only while the file still hashes to
    DVC's md5 (tasks/handoff.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = to_arrow(frame)  # no pandas call per column (greenloop/columnar.py)
    # Dictionary-encode only text: on float columns it buys nothing and costs ~7 µs a
    # column (3.5 ms of an 11 ms write at 500 columns, measured).
    text = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(table, tmp, use_dictionary=text)
    fsync_path(tmp)
    tmp.replace(path)  # atomic: a crash never leaves half a batch
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@quoted_task("ingest")
def ingest_batch(rt: Runtime, path: str, recovery: bool = False) -> Ingested:
    try:
        with rt.meter.phase("ingest") as reading:
            return _ingest(rt, path, recovery)
    finally:
        rt.ledger.add_energy(rt.model_name, None, "ingest", reading.as_dict())


def recover_received(rt: Runtime) -> list[Ingested]:
    """Ingests that crashed after the ledger row ('received') and before 'accepted':
    ingest them again from their arrival file if it is still there. If it is gone, the
    row waits: the same file arriving again is ingested then (same hash, same seq)."""
    done = []
    for row in rt.ledger.batches(rt.model_name, ("received",)):
        try:
            arrival = resolve_arrival(rt, row.source or "")
        except BatchRejected:
            continue
        if content_hash(arrival) == row.hash:
            done.append(ingest_batch(rt, str(arrival), recovery=True))
    return done


def _ingest(rt: Runtime, path: str, recovery: bool = False) -> Ingested:
    digest: str | None = None
    try:
        arrival = resolve_arrival(rt, path)
        digest = content_hash(arrival)
        frame = validate_batch(read_table(arrival), rt.schema, rt.cfg.data)
    except BatchRejected as e:
        quarantine(rt, path, digest, str(e))
        raise
    # One ingest of a model at a time: of N copies arriving at once, exactly one writes
    # the batch; the others find its row. A row still 'received' under this lock is an
    # ingest that crashed (SIGKILL releases the lock): it is done again, same seq.
    with model_lock(rt.ws.state, rt.model_name, "ingest"):
        seq, status = rt.ledger.receive(rt.model_name, digest, str(arrival), recovery=recovery)
        if status != "received":
            return Ingested(digest, seq, status, duplicate=True)
        checkpoint("ingest")
        accepted = rt.ws.accepted(rt.cfg.name) / f"{digest[:24]}.parquet"
        wrote = not accepted.exists() or accepted.stat().st_size == 0
        if wrote:
            accepted.parent.mkdir(parents=True, exist_ok=True)
            durable_write(frame, accepted)
        ensure_repo(rt.ws.home)
        md5 = dvc_add(rt.ws.home, accepted)
        if wrote:  # the update may take this frame if the file still has these bytes
            handoff.keep(md5, frame)
        rt.ledger.update_batch(rt.model_name, digest, status="accepted", rows=len(frame),
                               accepted_path=str(accepted.relative_to(rt.ws.home)), dvc_md5=md5,
                               error=None)
    return Ingested(digest, seq, "accepted", duplicate=False)
