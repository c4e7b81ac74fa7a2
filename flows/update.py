"""One arrived batch: ingest -> observe -> drift -> decide -> act -> evaluate -> register."""

from __future__ import annotations

from prefect import flow

from greenloop.locks import model_lock
from tasks.events import emit_accepted
from tasks.ingest import ingest_batch, recover_received
from tasks.pipeline import act, check_drift, decide, evaluate_candidate, load_work, observe
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
    recover_received(rt)  # ingests that crashed, if their file is still there
    with model_lock(rt.ws.state, rt.model_name, "update"):
        reconcile(rt)  # a crash between the ledger and the MLflow alias: repair the alias
    results = [process(rt, row) for row in rt.ledger.batches(rt.model_name, ("accepted",))]
    return [r for r in results if not r.get("already")]


def process(rt: Runtime, row, force: str | None = None) -> dict:  # noqa: ANN001 - a BatchRow
    """One batch under the model's update lock: two updates never interleave, and a batch
    another update processed meanwhile is not processed again (unless forced)."""
    with model_lock(rt.ws.state, rt.model_name, "update"):
        reconcile(rt)
        current = rt.ledger.batch(rt.model_name, row.hash)
        if current is not None and current.status == "processed" and not force:
            return {"seq": current.seq, "decision": current.decision, "version": current.version,
                    "promoted": False, "run_id": None, "already": True}
        try:
            return _process(rt, current or row, force)
        except Exception as e:  # the batch stays pending ('accepted'): retried next update
            rt.ledger.update_batch(rt.model_name, row.hash, error=f"{type(e).__name__}: {e}"[:500])
            raise


def _process(rt: Runtime, row, force: str | None) -> dict:  # noqa: ANN001 - a BatchRow
    work = load_work(rt, row)
    work = observe(rt, work)
    work = check_drift(rt, work)
    work = decide(rt, work, force)
    if work.decision.action != "skip":
        work = act(rt, work)
        work = evaluate_candidate(rt, work)
    return register(rt, work)
