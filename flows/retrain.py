"""`full-retrain`: a full retrain on demand or on a schedule (inactive by default).

Pending accepted batches are processed first, in arrival order, the last of them with
a forced full retrain; with none pending, the latest processed batch is processed
again with a forced full retrain (its training window covers everything through it).
This is also how a retrain deferred by the carbon window (greenloop/carbon.py) gets
done at a chosen low-carbon hour: give `schedule.full_retrain_cron` a window hour.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.update import process
from tasks.registry import reconcile
from tasks.runtime import get_runtime


@flow(name="full-retrain", log_prints=True)
def full_retrain(config: str, policy: str | None = None, home: str | None = None,
                 reason: str = "scheduled full retrain") -> list[dict]:
    rt = get_runtime(config, policy, home)
    reconcile(rt)
    pending = rt.ledger.batches(rt.model_name, ("accepted",))
    if pending:
        return [process(rt, row, reason if row is pending[-1] else None) for row in pending]
    done = rt.ledger.batches(rt.model_name, ("processed",))
    if not done or rt.ledger.champion(rt.model_name) is None:
        get_run_logger().info("%s: no model yet (bootstrap not complete): nothing to retrain",
                              rt.model_name)
        return []
    deferred = rt.ledger.pending_retrain(rt.model_name)
    if deferred:
        reason = f"{reason} (deferred at batch {deferred['seq']}: {deferred['reason']})"
    return [process(rt, done[-1], reason)]
