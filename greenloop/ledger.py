"""The pipeline's record of truth: SQLite in WAL mode in the state folder.

One row per (model, batch content hash) with its status, decision and quality; one
row per metered phase of every attempt (failed attempts keep their energy); one row
per model version with its lineage; and the history of the `champion` alias.
Prefect's and MLflow's databases are views for humans, not the record of truth.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    model TEXT NOT NULL, hash TEXT NOT NULL, seq INTEGER NOT NULL,
    source TEXT, accepted_path TEXT, rows INTEGER, status TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'update', decision TEXT, reason TEXT, version INTEGER,
    quality_before REAL, quality_after REAL, drift_share REAL, dvc_md5 TEXT,
    mlflow_run_id TEXT, error TEXT, received_at REAL, updated_at REAL,
    PRIMARY KEY (model, hash)
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_seq ON batches (model, seq);
CREATE TABLE IF NOT EXISTS energy (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, hash TEXT, phase TEXT NOT NULL,
    action TEXT, energy_kwh REAL, emissions_kg REAL, cpu_seconds REAL, wall_seconds REAL,
    at REAL
);
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL, version INTEGER NOT NULL, parent INTEGER, decision TEXT, reason TEXT,
    batch_hash TEXT, trained_through INTEGER, reference_quality REAL, holdout_gain REAL,
    energy_kwh REAL, lineage_energy_kwh REAL, data_md5 TEXT, created_at REAL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version INTEGER NOT NULL,
    previous INTEGER, reason TEXT, at REAL
);
CREATE TABLE IF NOT EXISTS deferrals (
    model TEXT NOT NULL, hash TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT, at REAL,
    PRIMARY KEY (model, hash)
);
CREATE TABLE IF NOT EXISTS duplicates (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, hash TEXT NOT NULL, source TEXT,
    status TEXT, at REAL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT, source TEXT, hash TEXT, reason TEXT,
    at REAL
);
"""

TERMINAL = ("processed",)


@dataclass(frozen=True)
class BatchRow:
    model: str
    hash: str
    seq: int
    status: str
    role: str
    accepted_path: str | None
    rows: int | None
    decision: str | None
    quality_before: float | None
    version: int | None
    dvc_md5: str | None = None
    reason: str | None = None
    source: str | None = None


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection per thread: a transaction on a shared connection would let
        # another thread's statements run inside it.
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._conn.executescript(SCHEMA)

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: one writer at a time across processes."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- batches -------------------------------------------------------------------
    def receive(self, model: str, digest: str, source: str, role: str = "update",
                recovery: bool = False) -> tuple[int, str]:
        """Record an arrival; returns (seq, status). A known hash keeps its row (dedupe)
        and counts as a duplicate, unless this is a `recovery` of a crashed ingest."""
        now = time.time()
        with self.transaction() as c:
            row = c.execute("SELECT seq, status FROM batches WHERE model=? AND hash=?",
                            (model, digest)).fetchone()
            if row:
                if row["status"] != "received" and not recovery:  # 'received': crashed ingest
                    c.execute("INSERT INTO duplicates (model, hash, source, status, at) VALUES "
                              "(?,?,?,?,?)", (model, digest, source, row["status"], now))
                return int(row["seq"]), str(row["status"])
            seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE model=?",
                            (model,)).fetchone()[0]
            c.execute("INSERT INTO batches (model, hash, seq, source, status, role, received_at,"
                      " updated_at) VALUES (?,?,?,?,?,?,?,?)",
                      (model, digest, seq, source, "received", role, now, now))
            return int(seq), "received"

    def update_batch(self, model: str, digest: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k}=?" for k in values)
        with self.transaction() as c:
            c.execute(f"UPDATE batches SET {cols} WHERE model=? AND hash=?",  # noqa: S608
                      (*values.values(), model, digest))

    def batch(self, model: str, digest: str) -> BatchRow | None:
        row = self._conn.execute("SELECT * FROM batches WHERE model=? AND hash=?",
                                 (model, digest)).fetchone()
        return _batch(row) if row else None

    def batches(self, model: str, statuses: tuple[str, ...] | None = None) -> list[BatchRow]:
        q = "SELECT * FROM batches WHERE model=?"
        args: list[Any] = [model]
        if statuses:
            q += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        return [_batch(r) for r in self._conn.execute(q + " ORDER BY seq", args)]

    def update_index(self, model: str, seq: int) -> int:
        """How many post-bootstrap batches were processed before `seq` (periodic's cadence)."""
        return int(self._conn.execute(
            "SELECT COUNT(*) FROM batches WHERE model=? AND status='processed' AND role='update'"
            " AND seq<?", (model, seq)).fetchone()[0])

    def history(self, model: str, before_seq: int) -> list[BatchRow]:
        """Accepted batches that arrived before `before_seq`, oldest first."""
        rows = self._conn.execute(
            "SELECT * FROM batches WHERE model=? AND seq<? AND accepted_path IS NOT NULL "
            "AND status IN ('accepted','processed') ORDER BY seq", (model, before_seq))
        return [_batch(r) for r in rows]

    # -- energy --------------------------------------------------------------------
    def add_energy(self, model: str, digest: str | None, phase: str, reading: dict[str, float],
                   action: str | None = None) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO energy (model, hash, phase, action, energy_kwh, emissions_kg,"
                      " cpu_seconds, wall_seconds, at) VALUES (?,?,?,?,?,?,?,?,?)",
                      (model, digest, phase, action, reading["energy_kwh"],
                       reading["emissions_kg"], reading["cpu_seconds"],
                       reading["wall_seconds"], time.time()))

    def energy_by_phase(self, model: str) -> dict[str, dict[str, float]]:
        rows = self._conn.execute(
            "SELECT phase, SUM(energy_kwh) e, SUM(emissions_kg) k, SUM(cpu_seconds) c,"
            " SUM(wall_seconds) w FROM energy WHERE model=? GROUP BY phase", (model,))
        return {r["phase"]: {"energy_kwh": r["e"], "emissions_kg": r["k"], "cpu_seconds": r["c"],
                             "wall_seconds": r["w"]} for r in rows}

    def mean_train_energy(self, model: str) -> dict[str, float]:
        """Mean measured training kWh per action: what the cost-aware policy prices with."""
        rows = self._conn.execute(
            "SELECT action, AVG(energy_kwh) FROM energy WHERE model=? AND phase='train' "
            "AND action IN ('finetune','retrain') GROUP BY action", (model,))
        return {r[0]: float(r[1]) for r in rows}

    # -- versions and the alias ----------------------------------------------------
    def add_version(self, model: str, version: int, **values: Any) -> None:
        values.update(model=model, version=version, created_at=time.time())
        cols = ", ".join(values)
        with self.transaction() as c:
            c.execute(f"INSERT OR REPLACE INTO versions ({cols}) VALUES "  # noqa: S608
                      f"({','.join('?' * len(values))})", tuple(values.values()))

    def version(self, model: str, version: int) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM versions WHERE model=? AND version=?",
                                 (model, version)).fetchone()
        return dict(row) if row else None

    def versions(self, model: str) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM versions WHERE model=? ORDER BY version", (model,))
        return [dict(r) for r in rows]

    def mean_gain(self, model: str) -> dict[str, float]:
        rows = self._conn.execute("SELECT decision, AVG(holdout_gain) FROM versions WHERE model=?"
                                  " AND holdout_gain IS NOT NULL GROUP BY decision", (model,))
        return {r[0]: float(r[1]) for r in rows}

    def champion(self, model: str) -> int | None:
        row = self._conn.execute("SELECT version FROM aliases WHERE model=? ORDER BY id DESC "
                                 "LIMIT 1", (model,)).fetchone()
        return int(row[0]) if row else None

    def move_champion(self, model: str, version: int, expected: int | None, reason: str) -> bool:
        """Compare-and-swap: moves only if the champion is still `expected`."""
        with self.transaction() as c:
            row = c.execute("SELECT version FROM aliases WHERE model=? ORDER BY id DESC LIMIT 1",
                            (model,)).fetchone()
            current = int(row[0]) if row else None
            if current != expected:
                return False
            c.execute("INSERT INTO aliases (model, version, previous, reason, at) VALUES "
                      "(?,?,?,?,?)", (model, version, current, reason, time.time()))
            return True

    def complete_batch(self, model: str, digest: str, values: dict[str, Any],
                       version: dict[str, Any] | None = None,
                       promote: tuple[int, int | None, str] | None = None) -> bool:
        """Close a batch in one transaction: its new model version (if any), the champion
        moved by compare-and-swap (`promote` = (version, expected, reason)), and the row
        marked processed. A crash before this leaves the batch pending and the champion
        as it was; after it, everything is recorded. Returns whether the champion moved."""
        moved = False
        now = time.time()
        with self.transaction() as c:
            status = c.execute("SELECT status FROM batches WHERE model=? AND hash=?",
                               (model, digest)).fetchone()
            if status is None:
                raise RuntimeError(f"batch {digest[:12]} of {model} is not in the ledger")
            if version is not None:
                row = {**version, "model": model, "created_at": now}
                c.execute(f"INSERT OR REPLACE INTO versions ({', '.join(row)}) VALUES "  # noqa: S608
                          f"({','.join('?' * len(row))})", tuple(row.values()))
            if promote is not None:
                new, expected, reason = promote
                cur = c.execute("SELECT version FROM aliases WHERE model=? ORDER BY id DESC "
                                "LIMIT 1", (model,)).fetchone()
                if (int(cur[0]) if cur else None) == expected:
                    c.execute("INSERT INTO aliases (model, version, previous, reason, at) VALUES "
                              "(?,?,?,?,?)", (model, new, expected, reason, now))
                    moved = True
            values = {**values, "status": "processed", "updated_at": now}
            c.execute(f"UPDATE batches SET {', '.join(f'{k}=?' for k in values)} "  # noqa: S608
                      "WHERE model=? AND hash=?", (*values.values(), model, digest))
        return moved

    def duplicates(self, model: str) -> int:
        """Arrivals of a content hash that was already known (dropped by dedupe)."""
        return int(self._conn.execute("SELECT COUNT(*) FROM duplicates WHERE model=?",
                                      (model,)).fetchone()[0])

    def status_counts(self, model: str) -> dict[str, int]:
        """How many of the model's batches are in each status (received, accepted, ...)."""
        rows = self._conn.execute("SELECT status, COUNT(*) FROM batches WHERE model=? "
                                  "GROUP BY status", (model,))
        return {r[0]: int(r[1]) for r in rows}

    def quarantine_count(self, dataset: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM quarantine WHERE dataset=?",
                                      (dataset,)).fetchone()[0])

    def alias_history(self, model: str) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM aliases WHERE model=? ORDER BY id", (model,))
        return [dict(r) for r in rows]

    def lineage_energy(self, model: str, version: int | None) -> float:
        v = self.version(model, version) if version is not None else None
        return float(v["lineage_energy_kwh"] or 0.0) if v else 0.0

    # -- carbon-aware deferral (greenloop/carbon.py) ------------------------------
    def defer_retrain(self, model: str, digest: str, seq: int, reason: str) -> None:
        """Record a full retrain put off to a low-carbon window (idempotent per batch)."""
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO deferrals (model, hash, seq, reason, at) VALUES "
                      "(?,?,?,?,?)", (model, digest, seq, reason, time.time()))

    def pending_retrain(self, model: str) -> dict[str, Any] | None:
        """The oldest deferral not yet followed by a full-retrain version trained past it."""
        row = self._conn.execute(
            "SELECT * FROM deferrals WHERE model=? AND seq > COALESCE((SELECT MAX("
            "trained_through) FROM versions WHERE model=? AND decision='retrain'), 0) "
            "ORDER BY seq LIMIT 1", (model, model)).fetchone()
        return dict(row) if row else None

    def quarantined(self, dataset: str, source: str, digest: str | None, reason: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO quarantine (dataset, source, hash, reason, at) VALUES "
                      "(?,?,?,?,?)", (dataset, source, digest, reason, time.time()))

    def reset(self, model: str) -> None:
        """Forget a model's stream, for a fresh replay from the bootstrap."""
        with self.transaction() as c:
            for table in ("batches", "versions", "aliases", "energy", "deferrals",
                          "duplicates"):
                c.execute(f"DELETE FROM {table} WHERE model=?", (model,))  # noqa: S608


def _batch(r: sqlite3.Row) -> BatchRow:
    return BatchRow(r["model"], r["hash"], int(r["seq"]), r["status"], r["role"],
                    r["accepted_path"], r["rows"], r["decision"], r["quality_before"],
                    r["version"], r["dvc_md5"], r["reason"], r["source"])
