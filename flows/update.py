"""One arrived batch: ingest -> step (observe, drift, decide, train, judge) -> register."""

from __future__ import annotations

import math
import os

from prefect import flow

from flows.confine import confine
from greenloop.ledger import BatchRow, LedgerBusy, LineageConflict
from greenloop.locks import model_lock
from greenloop.redact import redact
from greenloop.step import labelled_rows
from tasks.events import emit_accepted
from tasks.ingest import ingest_batch, recover_received
from tasks.pipeline import Work, load_work, log, run_step
from tasks.registry import reconcile, register
from tasks.runtime import Runtime, get_runtime

MAX_ATTEMPTS_ENV = "GREENLOOP_MAX_ATTEMPTS"
DEFAULT_MAX_ATTEMPTS = 3
# Failures that say nothing about the batch: the tracking server unreachable, a lock
# not obtained, MLflow and the ledger disagreeing. They stop the update (the batch stays
# `accepted`, retried next time) and never count towards a batch's attempts: an outage
# must not dead-letter good batches.
_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish a new "
                "connection", "Connection aborted", "Read timed out", "RemoteDisconnected")
_UNREACHABLE_TYPES = {"ConnectionError", "ConnectTimeout", "ReadTimeout", "MaxRetryError",
                      "NewConnectionError"}


class UpdateStopped(RuntimeError):
    """A failure outside the batch whose message carried credentials, re-raised redacted."""


class NonFiniteQuality(RuntimeError):
    """The champion's quality on a labelled batch is NaN: its predictions are not finite."""


@flow(name="ingest", log_prints=True)
def ingest(path: str, config: str, policy: str | None = None, home: str | None = None) -> dict:
    """Validate, version and record one arrived file (no training)."""
    confine(config, home)  # as a deployment, API callers can override the fixed parameters
    rt = get_runtime(config, policy, home)
    result = ingest_batch(rt, path)
    if not result.duplicate:
        emit_accepted(rt.cfg.name, rt.model_name, result.digest, result.seq)  # -> `update`
    return {"hash": result.digest, "seq": result.seq, "duplicate": result.duplicate}


@flow(name="update", log_prints=True)
def update(config: str, path: str | None = None, policy: str | None = None,
           home: str | None = None) -> list[dict]:
    """Ingest `path` if given, then process every accepted batch not yet processed, in
    arrival order."""
    rt = get_runtime(config, policy, home)
    arrival = ingest_batch(rt, path) if path is not None else None
    results = process_pending(rt)
    for r in results:  # the caller reports the arrival's own outcome, not an earlier one's
        r["arrival"] = arrival is not None and r.get("hash") == arrival.digest
    return results


def process_pending(rt: Runtime) -> list[dict]:
    recover_received(rt)  # ingests that crashed, if their file is still there
    with model_lock(rt.ws.state, rt.model_name, "update"):
        reconcile(rt)  # a crash between the ledger and the MLflow alias: repair the alias
    results = [process(rt, row) for row in rt.ledger.batches(rt.model_name, ("accepted",))]
    return [r for r in results if not r.get("already")]


def process(rt: Runtime, row: BatchRow, force: str | None = None) -> dict:
    """One batch under the model's update lock: two updates never interleave, and a batch
    another update processed meanwhile is not processed again (unless forced).

    A pending batch gets at most `max_attempts()` attempts (counted in the ledger before
    each starts, so a SIGKILLed attempt counts); after the last it is `failed`, with a
    dead-letter row, and the stream moves on without it. Failures outside the batch
    (see `outside_the_batch`) are not counted and are raised: the update stops."""
    with model_lock(rt.ws.state, rt.model_name, "update"):
        current = rt.ledger.batch(rt.model_name, row.hash) or row
        if current.status == "processed" and not force:
            return {"seq": current.seq, "decision": current.decision, "version": current.version,
                    "promoted": False, "run_id": None, "already": True, "hash": row.hash}
        if current.status == "failed" and not force:  # dead-lettered meanwhile
            return _failed(current, current.error or "", already=True)
        if current.status != "accepted":  # a forced re-run of a processed batch
            return _attempt(rt, current, force)
        cap = max_attempts()
        while True:
            attempt = rt.ledger.begin_attempt(rt.model_name, row.hash)
            if attempt > cap:  # the earlier attempts died without a word (killed)
                return _give_up(rt, current, f"{cap} attempts did not finish (the process "
                                             f"died in each); last error: {current.error}")
            try:
                return _attempt(rt, current, force)
            except Exception as e:
                error = redact(f"{type(e).__name__}: {e}")[:500]
                if outside_the_batch(e):
                    rt.ledger.forget_attempt(rt.model_name, row.hash, error)
                    if redact(str(e)) == str(e):
                        raise
                    # Prefect logs a flow's exception: never with a password in it.
                    raise UpdateStopped(error) from None
                done = rt.ledger.batch(rt.model_name, row.hash)
                if done is not None and done.status == "processed":
                    return _recorded_before_failing(rt, done, error)
                rt.ledger.update_batch(rt.model_name, row.hash, error=error)
                if attempt >= cap:
                    return _give_up(rt, current, f"attempt {attempt} of {cap}: {error}")


def _attempt(rt: Runtime, row: BatchRow, force: str | None) -> dict:
    # MLflow read afresh before every batch, a skip included: a registered model deleted
    # meanwhile refuses this batch (LineageConflict, outside the batch), not a later one.
    reconcile(rt, fresh=True)
    return {**register(rt, checked(rt, run_step(rt, load_work(rt, row, force)))),
            "hash": row.hash}


def _recorded_before_failing(rt: Runtime, row: BatchRow, error: str) -> dict:
    """The attempt failed after the ledger recorded the batch (e.g. while moving the
    MLflow alias): the batch is done. Another attempt would decide again, against the
    champion this one just promoted, and overwrite the record (found by the soak in CI:
    a fine-tune rewritten as a skip). The alias is made to follow the ledger now; if
    MLflow refuses, the next batch's reconcile does it."""
    log(f"{rt.model_name} batch {row.seq}: recorded as {row.decision}; then {error}")
    try:
        reconcile(rt)
    except Exception as e:  # noqa: BLE001 - repaired before the next batch in any case
        log(f"{rt.model_name}: the champion alias is repaired at the next batch ({e})")
    return {"seq": row.seq, "decision": row.decision, "version": row.version,
            "promoted": row.version is not None
            and rt.ledger.champion(rt.model_name) == row.version,
            "run_id": rt.ledger.mlflow_run_id(rt.model_name, row.hash), "hash": row.hash}


def checked(rt: Runtime, work: Work) -> Work:
    """A champion whose quality on a batch with labelled rows is NaN predicts non-finite
    values: recording the batch as processed would leave a NaN (stored as NULL) that
    prequential quality then skips, hiding the broken model. It is a failure instead."""
    q = work.quality_before
    if work.champion is not None and math.isnan(q):
        n = labelled_rows(work.batch, rt.cfg)
        if n:
            raise NonFiniteQuality(f"champion v{work.champion_version} scores NaN on batch "
                                   f"{work.batch.seq} ({n} labelled rows): its predictions "
                                   f"are not finite")
    return work


def _give_up(rt: Runtime, row: BatchRow, error: str) -> dict:
    rt.ledger.dead_letter(rt.model_name, row.hash, error)
    failed = rt.ledger.batch(rt.model_name, row.hash) or row
    return _failed(failed, error)


def _failed(row: BatchRow, error: str, already: bool = False) -> dict:
    return {"seq": row.seq, "decision": None, "version": None, "promoted": False,
            "run_id": None, "hash": row.hash, "failed": True, "attempts": row.attempts,
            "error": error, "already": already}


def max_attempts() -> int:
    """Attempts per batch before it is dead-lettered: $GREENLOOP_MAX_ATTEMPTS, default 3."""
    raw = os.environ.get(MAX_ATTEMPTS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_ATTEMPTS_ENV}={raw!r}: expected a whole number >= 1")
    return int(raw)


def outside_the_batch(e: BaseException) -> bool:
    """Is this failure about the world (server down, lock held, ledger and MLflow
    disagreeing) rather than about the batch? Looks through the exception's causes."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (LineageConflict, LedgerBusy, ConnectionError, TimeoutError)):
            return True
        if type(cur).__name__ in _UNREACHABLE_TYPES or any(m in str(cur) for m in _UNREACHABLE):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
