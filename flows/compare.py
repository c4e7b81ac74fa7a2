"""Policies side by side: the same stream through the same pipeline, once per policy, and
the strongest schedule a user could pick.

1. Warm-up: one-time imports and an unmetered ingest of the whole stream (Parquet writes
   and DVC adds happen here once, so no metered policy pays them and the others skip).
2. Screen: the 16 variants of periodic (every 1/2/4/8 batches × all history / last 4, 8,
   16 batches) through the pure step in memory — quality and training row-epochs, no
   energy — and `naive`, which needs no model.
3. Meter: every named policy and every variant on the screened quality/cost frontier
   (always including all history every batch), each a fresh replay in its own namespace
   (`<dataset>-cmp-<policy>`, never the production model), the order rotated per seed.
"""

from __future__ import annotations

from prefect import flow

from flows.replay import replay
from greenloop.compare import (
    BASELINE_CHOICES,
    DEFAULT_POLICIES,
    cheapest_within,
    mean_spread,
    naive_prequential,
    pareto_frontier,
    unmetered_matches,
    windowed,
)
from greenloop.policy import ALL_HISTORY, periodic_variants, variant_name
from greenloop.simulate import load_stream
from greenloop.tune import screen, screen_variants, with_knobs
from tasks.compare_report import (
    collect_curve,
    policy_config,
    warm_ingest,
    warm_up,
    write_compare,
)
from tasks.reporting import progress
from tasks.runtime import Runtime, get_runtime


def _replay(config: str, summary_name: str, home: str | None) -> dict:
    """A fresh replay of one policy. The batches run as task runs of the replay's flow run
    (not one flow run each): the same steps, without ~0.1-1 s of flow-run bookkeeping a
    batch that would dilute every ratio. A failure of the orchestration itself (e.g. a 503
    from a loaded ephemeral Prefect API) resumes once from the ledger instead of starting
    over; energy of the failed attempt stays counted (replay records it on failure)."""
    kwargs = {"home": home, "subflow_per_batch": False, "summary_name": summary_name}
    try:
        return replay(config, restart=True, **kwargs)
    except Exception:  # noqa: BLE001 - retried once, then raised
        return replay(config, restart=False, **kwargs)


def policy_names(rt: Runtime, policies: list[str] | None) -> list[str]:
    """The named policies to meter; plain `periodic` means the config's own schedule."""
    own = variant_name(rt.cfg.policy.periodic_every, rt.cfg.policy.periodic_window_batches)
    names = [own if p == "periodic" else p for p in (policies or DEFAULT_POLICIES)]
    return list(dict.fromkeys(p for p in names if p != "naive"))


def to_meter(rt: Runtime, screened: dict, policy_quality: dict[str, float], mode: str
             ) -> list[str]:
    """Which variants to replay whole: the frontier of screened quality vs training cost
    (the cheapest variant within tolerance of any quality is on it), or only each policy's
    screened iso-quality pick, or all; all history every batch always."""
    if mode not in BASELINE_CHOICES:
        raise ValueError(f"baselines must be one of {', '.join(BASELINE_CHOICES)}, got {mode!r}")
    task = rt.cfg.data.task
    costs = {n: (s.quality, float(s.train_row_epochs)) for n, s in screened.items()}
    if mode == "none":
        chosen = []
    elif mode == "all":
        chosen = list(screened)
    elif mode == "frontier":
        chosen = pareto_frontier(task, costs)
    else:
        chosen = [c for q in policy_quality.values() if (c := cheapest_within(task, q, costs))]
    return list(dict.fromkeys([ALL_HISTORY, *chosen]))


@flow(name="compare")
def compare(config: str, policies: list[str] | None = None, seeds: int = 1,
            home: str | None = None, drift_reports: bool = False,
            from_batch: int | None = None, baselines: str = "frontier") -> dict:
    rt = get_runtime(config, None, home)
    names = policy_names(rt, policies)
    warm_up(rt)  # one-time imports and connections are nobody's per-policy cost
    warm_ingest(rt, config, home)  # Parquet + DVC once, before any policy is metered
    batches, schema = load_stream(rt.cfg, rt.source_path)
    from_seq = from_batch or 0
    variants = [v for v in periodic_variants() if v not in names]
    # Screening is most of a long compare's wall time (Elec2: ~25 min): show it.
    screened = {v: screen_variants(rt.cfg, batches, schema, [v], from_seq)[v]
                for v in progress(variants, f"{rt.cfg.name} · screening schedules")}
    own = {p: screen(with_knobs(rt.cfg, name=p), batches, schema, p, from_seq).quality
           for p in names if p in ("gated", "cost-aware")} if baselines == "iso" else {}
    metered = list(dict.fromkeys(names + to_meter(rt, screened, own, baselines)))
    naive = naive_prequential(rt.cfg.data.task, rt.cfg.data.target, batches,
                              max(from_seq, rt.cfg.data.bootstrap_batches + 1))
    runs: dict[str, list[dict]] = {}
    curves: dict[str, list[list[dict]]] = {}
    orders: list[list[str]] = []
    meter(rt, config, metered, seeds, drift_reports, home, runs, curves, orders)
    if baselines != "none":
        for _ in range(MAX_FOLLOW_UPS):  # until every iso match is the cheapest one
            more = follow_ups(rt, names, runs, curves, screened, from_seq)
            if not more:
                break
            meter(rt, config, more, seeds, drift_reports, home, runs, curves, orders)
    return write_compare(rt, runs, curves, drift_reports, screened=screened, naive=naive,
                         from_batch=from_batch, orders=orders)


MAX_FOLLOW_UPS = 4  # rounds of extra variants; each is a cheap schedule, by construction


def meter(rt: Runtime, config: str, policies: list[str], seeds: int, drift_reports: bool,
          home: str | None, runs: dict[str, list[dict]], curves: dict[str, list[list[dict]]],
          orders: list[list[str]]) -> None:
    """Replay and meter `policies`, every seed, the order rotated per seed (no policy is
    always first, or last, on a warm machine); appends to `runs`, `curves`, `orders`."""
    for seed in range(seeds):
        order = policies[seed % len(policies):] + policies[:seed % len(policies)]
        if seed < len(orders):
            orders[seed] = orders[seed] + order
        else:
            orders.append(order)
        for policy in order:
            cfg_path = policy_config(rt, config, seed, policy, drift_reports)
            summary = _replay(cfg_path, f"compare-{policy}-seed{seed}.json", home)
            runs.setdefault(policy, []).append({**summary, "policy": policy})
            curves.setdefault(policy, []).append(collect_curve(cfg_path, home))


def follow_ups(rt: Runtime, names: list[str], runs: dict[str, list[dict]],
               curves: dict[str, list[list[dict]]], screened: dict, from_seq: int) -> list[str]:
    """Screened variants cheaper than a policy's metered iso match that may be within its
    tolerance: metered next (their measured mean decides, not the one-seed screening)."""
    post = windowed(runs, curves, from_seq)

    def mean_quality(p: str) -> float:
        return mean_spread([s["prequential"] for s in post[p]])[0]

    cost = {n: float(s.train_row_epochs) for n, s in screened.items()}
    metered = {v: (mean_quality(v), cost[v]) for v in runs if v in cost}
    quality = {p: mean_quality(p) for p in names if not p.startswith("periodic-")}
    screened_cost = {n: (s.quality, cost[n]) for n, s in screened.items()}
    return unmetered_matches(rt.cfg.data.task, quality, metered, screened_cost)
