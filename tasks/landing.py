"""The landing folder against the ledger: arrivals whose report was lost.

A file in data/landing/<dataset>/ is accounted for once the ledger has a row for its
content (accepted files stay in landing) or it was moved to quarantine. Anything else was
never ingested: its report was lost (a crash between the watcher and the task worker, a
server outage, an ingest killed before `receive`). `serve` reports such files again when
it starts, and every scheduled update ingests them.
"""

from __future__ import annotations

from pathlib import Path

from greenloop.data import BatchRejected, content_hash
from greenloop.watch import is_candidate
from tasks.ingest import ingest_batch
from tasks.runtime import Runtime


def unaccounted(rt: Runtime, files: list[Path]) -> set[str]:
    """Names of the landing files whose content has no ledger row."""
    lost = set()
    for path in files:
        try:
            digest = content_hash(path)
        except OSError:
            continue  # removed meanwhile
        if rt.ledger.batch(rt.model_name, digest) is None:
            lost.add(path.name)
    return lost


def rescan(rt: Runtime) -> list[str]:
    """Ingest every unaccounted landing file (complete ones only: not temporary names).
    Returns the names ingested or quarantined."""
    folder = rt.ws.landing(rt.cfg.name)
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()
                   and is_candidate(p))
    done = []
    for name in sorted(unaccounted(rt, files)):
        try:
            ingest_batch(rt, str(folder / name))
        except BatchRejected:
            pass  # quarantined with its reason: accounted for
        done.append(name)
    return done
