"""One arrived batch: ingest -> step (observe, drift, decide, train, judge) -> register."""

from __future__ import annotations

from prefect import flow

from greenloop.ledger import BatchRow
from greenloop.locks import model_lock
from tasks.events import emit_accepted
from tasks.ingest import ingest_batch, recover_received
from tasks.pipeline import load_work, run_step
from tasks.registry import reconcile, register
from tasks.runtime import Runtime, get_runtime


@flow(name="ingest", log_prints=True)
def ingest(path: str, config: str, policy: str | None = None, home: str | None = None) -> dict:
    """Validate, version and record one arrived file (no training)."""
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
    if path is not None:
        ingest_batch(rt, path)
    return process_pending(rt)


def process_pending(rt: Runtime) -> list[dict]:
    recover_received(rt)  # ingests that crashed, if their file is still there
    with model_lock(rt.ws.state, rt.model_name, "update"):
        reconcile(rt)  # a crash between the ledger and the MLflow alias: repair the alias
    results = [process(rt, row) for row in rt.ledger.batches(rt.model_name, ("accepted",))]
    return [r for r in results if not r.get("already")]


def process(rt: Runtime, row: BatchRow, force: str | None = None) -> dict:
    """One batch under the model's update lock: two updates never interleave, and a batch
    another update processed meanwhile is not processed again (unless forced)."""
    with model_lock(rt.ws.state, rt.model_name, "update"):
        reconcile(rt)
        current = rt.ledger.batch(rt.model_name, row.hash)
        if current is not None and current.status == "processed" and not force:
            return {"seq": current.seq, "decision": current.decision, "version": current.version,
                    "promoted": False, "run_id": None, "already": True}
        try:
            return register(rt, run_step(rt, load_work(rt, current or row, force)))
        except Exception as e:  # the batch stays pending ('accepted'): retried next update
            rt.ledger.update_batch(rt.model_name, row.hash, error=f"{type(e).__name__}: {e}"[:500])
            raise
