"""The pipeline's record of truth: SQLite in WAL mode in the state folder.

One row per (model, batch content hash) with its status, decision and quality; one
row per metered phase of every attempt (failed attempts keep their energy); one row
per model version with its lineage; and the history of the `champion` alias.
Prefect's and MLflow's databases are views for humans, not the record of truth.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenloop.ledger_history import HistoryCache, HistoryRef, changes_sql
from greenloop.locks import LockTimeout, lock_path, model_lock

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
-- What each arrival asks (batches waiting in a status; mean training energy) reads the
-- rows it needs, not a model's whole history: constant cost in a long-running serve.
CREATE INDEX IF NOT EXISTS batches_status ON batches (model, status, seq);
CREATE TABLE IF NOT EXISTS energy (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, hash TEXT, phase TEXT NOT NULL,
    action TEXT, energy_kwh REAL, emissions_kg REAL, cpu_seconds REAL, wall_seconds REAL,
    at REAL
);
CREATE INDEX IF NOT EXISTS energy_phase ON energy (model, phase, action);
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
-- Whether a version ever served (refused_retrains): a lookup, not a scan of the history.
CREATE INDEX IF NOT EXISTS aliases_version ON aliases (model, version);
CREATE TABLE IF NOT EXISTS deferrals (
    model TEXT NOT NULL, hash TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT, at REAL,
    PRIMARY KEY (model, hash)
);
CREATE TABLE IF NOT EXISTS duplicates (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, hash TEXT NOT NULL, source TEXT,
    status TEXT, at REAL
);
CREATE TABLE IF NOT EXISTS service_sessions (
    id TEXT PRIMARY KEY, started_at REAL, updated_at REAL, stopped_at REAL,
    wall_seconds REAL, cpu_seconds REAL, energy_kwh REAL, emissions_kg REAL,
    batch_cpu_seconds REAL, batch_energy_kwh REAL, batch_wall_seconds REAL, batches INTEGER,
    energy_method TEXT, counted TEXT
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT, source TEXT, hash TEXT, reason TEXT,
    at REAL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, hash TEXT NOT NULL,
    seq INTEGER NOT NULL, source TEXT, accepted_path TEXT, attempts INTEGER, error TEXT,
    at REAL, retried_at REAL
);
"""

# Columns added after ledgers were already in the field: added in place if missing.
MIGRATIONS = (("batches", "attempts", "INTEGER NOT NULL DEFAULT 0"),
              ("batches", "labelled_rows", "INTEGER"),  # rows with a target (scored, trained)
              ("versions", "run_id", "TEXT"),
              # JSON list of the seqs the batch's drift was checked against (its reference
              # window): `greenloop report` renders that check again, on demand.
              ("batches", "reference_seqs", "TEXT"),
              # CPU-s of serve's tree from exec until it served (`--idle-exit auto`'s price).
              ("service_sessions", "startup_cpu_seconds", "REAL"))


class LineageConflict(RuntimeError):
    """MLflow and the ledger name one model version for two different things."""


class LedgerBusy(RuntimeError):
    """The model's update lock is held (a served update runs): the ledger is not reset."""

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
    attempts: int = 0
    error: str | None = None
    labelled_rows: int | None = None  # None: recorded before unlabelled rows were kept

    @property
    def scored_rows(self) -> int:
        """Rows that count in prequential quality: the labelled ones."""
        return self.rows or 0 if self.labelled_rows is None else self.labelled_rows


def when_unlocked(fn: Callable[[], object], timeout_s: float = 60.0) -> None:
    """Run `fn`, again while SQLite says "database is locked". Processes opening a new
    ledger at once (a fleet's workers) race to create it and switch it to WAL, and that
    switch can fail at once, without waiting in the busy handler (13 of 30 trials with
    8 processes, tests/reliability/test_concurrency.py)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fn()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.1))


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection per thread: a transaction on a shared connection would let
        # another thread's statements run inside it.
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        when_unlocked(lambda: self._conn.executescript(SCHEMA))
        when_unlocked(self._migrate)
        when_unlocked(lambda: self._conn.executescript(changes_sql()))
        self._history = HistoryCache(lambda: self._conn)

    def _migrate(self) -> None:
        for table, column, decl in MIGRATIONS:
            have = {r["name"] for r in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                except sqlite3.OperationalError as e:  # another process added it first
                    if "duplicate column" not in str(e):
                        raise

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            when_unlocked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
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

    def mlflow_run_id(self, model: str, digest: str) -> str | None:
        """The MLflow run that recorded this batch, if one did."""
        row = self._conn.execute("SELECT mlflow_run_id FROM batches WHERE model=? AND hash=?",
                                 (model, digest)).fetchone()
        return row[0] if row else None

    def batches(self, model: str, statuses: tuple[str, ...] | None = None) -> list[BatchRow]:
        q = "SELECT * FROM batches WHERE model=?"
        args: list[Any] = [model]
        if statuses:
            q += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        return [_batch(r) for r in self._conn.execute(q + " ORDER BY seq", args)]

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """A read-only query for reports (status, the service's standing cost)."""
        return [dict(r) for r in self._conn.execute(sql, args)]

    def update_index(self, model: str, seq: int) -> int:
        """How many post-bootstrap batches were processed before `seq` (periodic's cadence)."""
        return self._history.update_index(model, seq)

    def history(self, model: str, before_seq: int) -> list[HistoryRef]:
        """Accepted batches that arrived before `before_seq`, oldest first: what loading
        each one needs, not its whole row. Kept between calls and patched with what
        changed since (greenloop/ledger_history.py): a long stream does not make every
        batch read its whole history again."""
        return self._history.history(model, before_seq)

    # -- energy --------------------------------------------------------------------
    def add_energy(self, model: str, digest: str | None, phase: str, reading: dict[str, float],
                   action: str | None = None) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO energy (model, hash, phase, action, energy_kwh, emissions_kg,"
                      " cpu_seconds, wall_seconds, at) VALUES (?,?,?,?,?,?,?,?,?)",
                      (model, digest, phase, action, reading["energy_kwh"],
                       reading["emissions_kg"], reading["cpu_seconds"],
                       reading["wall_seconds"], time.time()))

    def last_energy_id(self) -> int:
        return int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM energy").fetchone()[0])

    def energy_since(self, model: str, after_id: int) -> dict[str, float]:
        """Sums of the energy rows of `model` recorded after row `after_id` (a window)."""
        row = self._conn.execute(
            "SELECT COALESCE(SUM(energy_kwh),0), COALESCE(SUM(emissions_kg),0),"
            " COALESCE(SUM(cpu_seconds),0), COALESCE(SUM(wall_seconds),0) FROM energy"
            " WHERE model=? AND id>? AND phase!='run'", (model, after_id)).fetchone()
        return dict(zip(("energy_kwh", "emissions_kg", "cpu_seconds", "wall_seconds"),
                        map(float, row), strict=True))

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
            if not _same_version(c, model, values):  # never over another version's lineage
                c.execute(f"INSERT INTO versions ({cols}) VALUES "  # noqa: S608
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

    def refused_retrains(self, model: str) -> int:
        """Full retrains whose candidate never became the champion (the promotion check
        turned it down): which window the next one trains on (greenloop/window.py)."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM versions v WHERE v.model=? AND v.decision='retrain' AND NOT "
            "EXISTS (SELECT 1 FROM aliases a WHERE a.model=v.model AND a.version=v.version)",
            (model,)).fetchone()
        return int(row[0])

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
                # Never over an existing version's lineage: MLflow restarting its
                # numbering (model deleted, mlflow.db replaced) must stop here.
                if not _same_version(c, model, row):
                    c.execute(f"INSERT INTO versions ({', '.join(row)}) VALUES "  # noqa: S608
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
        """Forget a model's stream, for a fresh replay from the bootstrap. Under the
        model's update lock, and refused at once while another update holds it (a
        served update of that model must never see its history vanish)."""
        try:
            with model_lock(self.path.parent, model, "update", timeout_s=0):
                with self.transaction() as c:
                    for table in ("batches", "versions", "aliases", "energy", "deferrals",
                                  "duplicates", "dead_letters"):
                        c.execute(f"DELETE FROM {table} WHERE model=?", (model,))  # noqa: S608
        except LockTimeout as e:
            raise LedgerBusy(
                f"refusing to reset {model}: an update of it is running (lock "
                f"{lock_path(self.path.parent, model + '.update')} is held); stop the "
                f"server or wait for the update, or use another model name") from e

    # -- attempts and dead letters -------------------------------------------------
    def begin_attempt(self, model: str, digest: str) -> int:
        """Count one more attempt at processing a batch (before it starts, so an attempt
        killed by SIGKILL counts too); returns the attempts so far, this one included."""
        with self.transaction() as c:
            c.execute("UPDATE batches SET attempts=attempts+1, updated_at=? WHERE model=? AND "
                      "hash=?", (time.time(), model, digest))
            row = c.execute("SELECT attempts FROM batches WHERE model=? AND hash=?",
                            (model, digest)).fetchone()
        return int(row[0]) if row else 0

    def forget_attempt(self, model: str, digest: str, error: str) -> None:
        """An attempt that failed for a reason outside the batch (the tracking server is
        down): it does not count towards the cap."""
        with self.transaction() as c:
            c.execute("UPDATE batches SET attempts=MAX(attempts-1, 0), error=?, updated_at=? "
                      "WHERE model=? AND hash=?", (error, time.time(), model, digest))

    def dead_letter(self, model: str, digest: str, error: str) -> None:
        """Give up on a batch: status `failed`, a dead-letter row with the error; its
        accepted file stays where it is (for `greenloop retry` and for inspection)."""
        now = time.time()
        with self.transaction() as c:
            row = c.execute("SELECT * FROM batches WHERE model=? AND hash=?",
                            (model, digest)).fetchone()
            if row is None:
                raise RuntimeError(f"batch {digest[:12]} of {model} is not in the ledger")
            c.execute("UPDATE batches SET status='failed', error=?, updated_at=? WHERE model=? "
                      "AND hash=?", (error, now, model, digest))
            c.execute("INSERT INTO dead_letters (model, hash, seq, source, accepted_path, "
                      "attempts, error, at) VALUES (?,?,?,?,?,?,?,?)",
                      (model, digest, row["seq"], row["source"], row["accepted_path"],
                       row["attempts"], error, now))

    def dead_letters(self, model: str, open_only: bool = True) -> list[dict[str, Any]]:
        q = "SELECT * FROM dead_letters WHERE model=?"
        if open_only:
            q += " AND retried_at IS NULL"
        return [dict(r) for r in self._conn.execute(q + " ORDER BY seq", (model,))]

    def retry_failed(self, model: str, seq: int | None = None) -> list[int]:
        """Put failed batches (all, or the one with `seq`) back to `accepted` with a
        fresh attempt count; returns their seqs."""
        now = time.time()
        with self.transaction() as c:
            q = "SELECT seq, hash FROM batches WHERE model=? AND status='failed'"
            args: list[Any] = [model]
            if seq is not None:
                q += " AND seq=?"
                args.append(seq)
            rows = c.execute(q + " ORDER BY seq", args).fetchall()
            for r in rows:
                c.execute("UPDATE batches SET status='accepted', attempts=0, updated_at=? "
                          "WHERE model=? AND hash=?", (now, model, r["hash"]))
                c.execute("UPDATE dead_letters SET retried_at=? WHERE model=? AND hash=? AND "
                          "retried_at IS NULL", (now, model, r["hash"]))
        return [int(r["seq"]) for r in rows]

    def accounted_hashes(self, model: str, dataset: str) -> set[str]:
        """Content hashes with a batch row of `model` or a quarantine row of `dataset`."""
        rows = self._conn.execute(
            "SELECT hash FROM batches WHERE model=? UNION SELECT hash FROM quarantine WHERE "
            "dataset=? AND hash IS NOT NULL", (model, dataset))
        return {str(r[0]) for r in rows}


def _same_version(c: sqlite3.Connection, model: str, row: dict[str, Any]) -> bool:
    """True if the ledger already holds exactly this version (same batch, same run):
    nothing to write. A different one under the same number raises LineageConflict."""
    old = c.execute("SELECT batch_hash, run_id FROM versions WHERE model=? AND version=?",
                    (model, row["version"])).fetchone()
    if old is None:
        return False
    if old["batch_hash"] == row.get("batch_hash") and old["run_id"] == row.get("run_id"):
        return True
    raise LineageConflict(
        f"{model} v{row['version']}: the ledger has it from batch {str(old['batch_hash'])[:12]} "
        f"(MLflow run {old['run_id']}), MLflow now gives it to batch "
        f"{str(row.get('batch_hash'))[:12]} (run {row.get('run_id')}); the registered model "
        f"was deleted or mlflow.db replaced. Refusing to continue: restore MLflow's database, "
        f"or start a new stream (`greenloop run --restart`)")


def _batch(r: sqlite3.Row) -> BatchRow:
    return BatchRow(r["model"], r["hash"], int(r["seq"]), r["status"], r["role"],
                    r["accepted_path"], r["rows"], r["decision"], r["quality_before"],
                    r["version"], r["dvc_md5"], r["reason"], r["source"],
                    int(r["attempts"] or 0), r["error"], r["labelled_rows"])
