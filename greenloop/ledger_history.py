"""A model's history as the ledger last gave it, brought up to date by what changed since.

Every batch's step is handed the accepted batches before it. Read whole, that list cost
1.3 ms at 1,000 batches, 7.2 ms at 5,000 and 34 ms at 20,000 (7 Dec): a model served
hourly pays it on every skip within months. Here it is read once per process and then
patched: triggers (`changes_sql`) log every batch row that is inserted, deleted, or whose
status, role, path or hash changes, in whichever process or thread wrote it, and each
read applies the rows logged since the last one. A reset (rows deleted), a dead letter
(status `failed`), a retry, or a batch accepted out of order all reach the list this
way; a log older than the list (a ledger replaced under a running process), or one that
dropped rows the list never saw (CHANGES_KEPT), rebuilds it.
"""

from __future__ import annotations

import sqlite3
import threading
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

# Statuses whose batches are history for later ones (and carry an accepted file).
IN_HISTORY = ("accepted", "processed")

# The log keeps its last CHANGES_KEPT rows (each insert drops the one that falls out):
# about three a batch, so a reader away for fewer than ~30,000 batches patches its list,
# and one away longer (its last row dropped) reads the history whole again.
CHANGES_KEPT = 100_000


def changes_sql() -> str:
    """The log and its triggers (made once per ledger file: IF NOT EXISTS)."""
    return f"""
CREATE TABLE IF NOT EXISTS batch_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS batch_changes_kept AFTER INSERT ON batch_changes BEGIN
    DELETE FROM batch_changes WHERE id <= NEW.id - {CHANGES_KEPT};
END;
CREATE TRIGGER IF NOT EXISTS batches_inserted AFTER INSERT ON batches BEGIN
    INSERT INTO batch_changes (model, seq) VALUES (NEW.model, NEW.seq);
END;
CREATE TRIGGER IF NOT EXISTS batches_deleted AFTER DELETE ON batches BEGIN
    INSERT INTO batch_changes (model, seq) VALUES (OLD.model, OLD.seq);
END;
CREATE TRIGGER IF NOT EXISTS batches_changed
AFTER UPDATE OF model, hash, seq, status, role, accepted_path, dvc_md5 ON batches BEGIN
    INSERT INTO batch_changes (model, seq) VALUES (OLD.model, OLD.seq);
    INSERT INTO batch_changes (model, seq) VALUES (NEW.model, NEW.seq);
END;
"""


# More changed batches than this since the last read: the history is read whole again.
_PATCH_AT_MOST = 500
_COLUMNS = "hash, seq, accepted_path, dvc_md5, status, role"
_MEMBER = f"accepted_path IS NOT NULL AND status IN {IN_HISTORY!r}"


class HistoryRef(NamedTuple):
    """An accepted batch as the history of a later one: where its file is."""

    hash: str
    seq: int
    accepted_path: str
    dvc_md5: str | None


@dataclass
class _Model:
    """One model's history, sorted by seq, as of change `change_id`."""

    change_id: int
    seqs: list[int] = field(default_factory=list)
    refs: list[HistoryRef] = field(default_factory=list)
    counted: list[int] = field(default_factory=list)  # seqs of processed update batches

    def drop(self, seq: int) -> None:
        for keys, values in ((self.seqs, self.refs), (self.counted, None)):
            i = bisect_left(keys, seq)
            if i < len(keys) and keys[i] == seq:
                del keys[i]
                if values is not None:
                    del values[i]

    def put(self, row: tuple) -> None:
        digest, seq, path, md5, status, role = row
        i = bisect_left(self.seqs, seq)
        self.seqs.insert(i, seq)
        self.refs.insert(i, HistoryRef(digest, seq, path, md5))
        if status == "processed" and role == "update":
            self.counted.insert(bisect_left(self.counted, seq), seq)


class HistoryCache:
    """The history and update index of each model, for one process."""

    def __init__(self, connection: Callable[[], sqlite3.Connection]) -> None:
        self._conn = connection  # this thread's connection to the ledger
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()

    def history(self, model: str, before_seq: int) -> list[HistoryRef]:
        """Accepted batches that arrived before `before_seq`, oldest first."""
        with self._lock:
            m = self._current(model)
            return m.refs[:bisect_left(m.seqs, before_seq)]

    def update_index(self, model: str, seq: int) -> int:
        """How many post-bootstrap batches were processed before `seq`."""
        with self._lock:
            m = self._current(model)
            return bisect_left(m.counted, seq)

    def _current(self, model: str) -> _Model:
        conn = self._conn()
        own = not conn.in_transaction
        if own:  # one snapshot: the log and the rows it names, as of one moment
            conn.execute("BEGIN")
        try:
            # Two subqueries: SQLite reads MIN and MAX of a rowid at the ends of its
            # B-tree only when each is a query of its own.
            oldest, newest = (int(v or 0) for v in conn.execute(
                "SELECT (SELECT MIN(id) FROM batch_changes), "
                "(SELECT MAX(id) FROM batch_changes)").fetchone())
            m = self._models.get(model)
            # Never read; its next log rows dropped; or a log older than it (replaced).
            stale = m is None or oldest > m.change_id + 1 or newest < m.change_id
            changed = [] if m is None or stale else \
                _changed_seqs(conn, model, m.change_id, newest)
            if m is None or stale or len(changed) > _PATCH_AT_MOST:
                m = self._models[model] = _read_whole(conn, model, newest)
            else:
                _apply(conn, model, m, changed, newest)
        finally:
            if own:
                conn.execute("COMMIT")
        return m


def _read_whole(conn: sqlite3.Connection, model: str, change_id: int) -> _Model:
    m = _Model(change_id)
    rows = _plain(conn).execute(f"SELECT {_COLUMNS} FROM batches WHERE model=? AND "  # noqa: S608
                                f"{_MEMBER} ORDER BY seq", (model,))
    for row in rows:
        m.put(row)
    return m


def _changed_seqs(conn: sqlite3.Connection, model: str, after_id: int,
                  newest: int) -> list[int]:
    """The seqs of `model`'s batch rows changed after log row `after_id`."""
    return sorted({int(r[0]) for r in _plain(conn).execute(
        "SELECT seq FROM batch_changes WHERE id>? AND id<=? AND model=?",
        (after_id, newest, model))})


def _apply(conn: sqlite3.Connection, model: str, m: _Model, changed: list[int],
           newest: int) -> None:
    """Each changed batch out of the history, and back in where its row now belongs."""
    if changed:
        marks = ",".join("?" * len(changed))
        rows = _plain(conn).execute(
            f"SELECT {_COLUMNS} FROM batches WHERE model=? AND seq IN ({marks}) "  # noqa: S608
            f"AND {_MEMBER}", (model, *changed)).fetchall()
        for seq in changed:
            m.drop(seq)
        for row in rows:
            m.put(row)
    m.change_id = newest


def _plain(conn: sqlite3.Connection) -> sqlite3.Cursor:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: no sqlite3.Row per row
    return cursor
