"""One arrived batch: ingest -> observe -> drift -> decide -> act -> evaluate -> register."""

from __future__ import annotations

from prefect import flow

from tasks.ingest import ingest_batch
from tasks.pipeline import act, check_drift, decide, evaluate_candidate, load_work, observe
from tasks.registry import reconcile, register
from tasks.runtime import Runtime, get_runtime


@flow(name="ingest", log_prints=True)
def ingest(path: str, config: str, policy: str | None = None, home: str | None = None) -> dict:
    """Validate, version and record one arrived file (no training)."""
    rt = get_runtime(config, policy, home)
    result = ingest_batch(rt, path)
    return {"hash": result.digest, "seq": result.seq, "duplicate": result.duplicate}


@flow(name="update", log_prints=True)
def update(config: str, path: str | None = None, policy: str | None = None,
           home: str | None = None) -> list[dict]:
    """Ingest `path` if given, then process every accepted batch not yet processed, in
    arrival order."""
    rt = get_runtime(config, policy, home)
    if path is not None:
        ingest_batch(rt, path)
    reconcile(rt)
    return [process(rt, row) for row in rt.ledger.batches(rt.model_name, ("accepted",))]


def process(rt: Runtime, row) -> dict:  # noqa: ANN001 - a ledger BatchRow
    work = load_work(rt, row)
    work = observe(rt, work)
    work = check_drift(rt, work)
    work = decide(rt, work)
    if work.decision.action != "skip":
        work = act(rt, work)
        work = evaluate_candidate(rt, work)
    return register(rt, work)
