"""Policies side by side: the same stream through the same pipeline, once per policy.

Every policy gets its own registered model (`<dataset>-<policy>`) and a fresh replay
(`--restart` semantics), so the ingest, drift check, evaluation, registry and metering
are identical; only *when* and *on which rows* a model trains differs.
"""

from __future__ import annotations

from prefect import flow

from flows.replay import replay
from greenloop.compare import BASELINE, DEFAULT_POLICIES
from tasks.compare_report import collect_curve, seed_config, warm_up, write_compare
from tasks.runtime import get_runtime


def _replay(config: str, policy: str, home: str | None) -> dict:
    """A fresh replay of one policy. The batches run as task runs of the replay's flow run
    (not one flow run each): the same steps, without ~0.1-1 s of flow-run bookkeeping a
    batch that would dilute every ratio. A failure of the orchestration itself (e.g. a 503
    from a loaded ephemeral Prefect API) resumes once from the ledger instead of starting
    over; energy of the failed attempt stays counted (replay records it on failure)."""
    try:
        return replay(config, policy=policy, restart=True, home=home, subflow_per_batch=False)
    except Exception:  # noqa: BLE001 - retried once, then raised
        return replay(config, policy=policy, restart=False, home=home, subflow_per_batch=False)


@flow(name="compare")
def compare(config: str, policies: list[str] | None = None, seeds: int = 1,
            home: str | None = None, drift_reports: bool = False) -> dict:
    names = list(dict.fromkeys(policies or DEFAULT_POLICIES))
    if BASELINE not in names:
        names.insert(0, BASELINE)  # every ratio needs the baseline's run
    rt = get_runtime(config, None, home)
    warm_up(rt)  # one-time imports and connections are nobody's per-policy cost
    runs: dict[str, list[dict]] = {p: [] for p in names}
    curves: dict[str, list[list[dict]]] = {p: [] for p in names}
    for seed in range(seeds):
        seed_cfg = seed_config(rt, config, seed, drift_reports)
        for policy in names:
            runs[policy].append(_replay(seed_cfg, policy, home))
            curves[policy].append(collect_curve(seed_cfg, policy, home))
    return write_compare(rt, runs, curves, drift_reports)
