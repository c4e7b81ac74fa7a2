"""Edges of `compare`: seed configs, per-batch curves from the ledger, and the report
(compare.json, compare.md, per-policy curve CSVs for `dvc plots`, compare.png, frontier.png).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import yaml

from greenloop.compare import (
    ACCURACY_TOLERANCE,
    BASELINE,
    MAE_TOLERANCE,
    batch_curve,
    compare_runs,
    curve_records,
    hindsight_choice,
    iso_quality,
    mean_spread,
    mean_summary,
    overhead_share,
    read_energy_rows,
    seconds_per_batch,
    windowed,
    within_tolerance,
)
from greenloop.data import BatchRejected
from greenloop.policy import periodic_variants
from greenloop.tune import Screened, variant_knobs
from tasks.ingest import ingest_batch
from tasks.reporting import write_json
from tasks.runtime import Runtime, get_runtime
from tasks.stream import prepare_stream
from tasks.versioning import ensure_repo

WARMUP_NAMESPACE = "cmp-warmup"

CURVE_FIELDS = ("seq", "role", "decision", "rows", "quality", "prequential", "energy_kwh",
                "train_energy_kwh", "cpu_seconds", "wall_seconds", "cumulative_energy_kwh",
                "cumulative_train_energy_kwh")


def out_dir(rt: Runtime) -> Path:
    return rt.ws.reports / f"compare-{rt.cfg.name}"


def warm_up(rt: Runtime) -> None:
    """Pay one-time costs (heavy imports, MLflow schema, CodeCarbon's first start) before
    any policy is metered, so that the first policy compared is not billed for them."""
    import torch
    from evidently.legacy.calculations.stattests.registry import get_stattest  # noqa: F401

    import greenloop.train  # noqa: F401  (torch)

    # torch imports its compiler stack (~2 s) lazily, when the first optimizer is made.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])

    rt.tracker  # noqa: B018 - opens MLflow (creates its tables on first use)
    ensure_repo(rt.ws.home)  # `dvc init` on a fresh home
    with rt.meter.phase("warmup"):
        pass
    rt.source  # noqa: B018 - reads the source once


def policy_config(rt: Runtime, config: str, seed: int, policy: str, drift_reports: bool,
                  namespace: str | None = None) -> str:
    """The config one compared policy replays with: the given one with model.seed + `seed`,
    the policy (a periodic variant sets its cadence and window) and its own namespace,
    `cmp-<policy>`: a fresh registered model and ledger stream, never the production
    `<dataset>-<policy>`. Without HTML drift reports unless asked: one is rendered per
    retrain (~1.4 s here), which would bill a schedule that retrains every batch for a
    human-facing artifact a scheduled pipeline does not produce."""
    raw = yaml.safe_load(Path(config).read_text())
    raw.setdefault("model", {})["seed"] = rt.cfg.model.seed + seed
    if not drift_reports:
        raw.setdefault("drift", {})["report"] = "never"
    knobs = variant_knobs(policy) if policy.startswith("periodic-") else {"name": policy}
    namespace = namespace or f"cmp-{policy}"
    raw.setdefault("policy", {}).update({**knobs, "namespace": namespace})
    # One file per namespace: runtimes are cached per config path.
    path = out_dir(rt) / "configs" / f"{Path(config).stem}-{namespace}-seed{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def warm_ingest(rt: Runtime, config: str, home: str | None) -> int:
    """Ingest the whole stream once, unmetered for every policy, under its own namespace:
    the accepted Parquet files and their DVC entries are content-addressed, so afterwards
    every compared policy finds them and pays the same (hash + validate), instead of the
    first one paying all writes. Returns the number of batches accepted."""
    path = policy_config(rt, config, 0, rt.cfg.policy.name, False, WARMUP_NAMESPACE)
    wrt = get_runtime(path, None, home)
    wrt.ledger.reset(wrt.model_name)
    accepted = 0
    for arrival in prepare_stream(wrt):
        try:
            accepted += not ingest_batch(wrt, str(arrival)).duplicate
        except BatchRejected:
            continue  # quarantined; every policy's replay rejects it the same way
    return accepted


def collect_curve(config: str, home: str | None) -> list[dict[str, Any]]:
    rt = get_runtime(config, None, home)
    points = batch_curve(rt.ledger.batches(rt.model_name),
                         read_energy_rows(rt.ws.ledger_path, rt.model_name))
    return curve_records(points)


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "torch_threads": torch.get_num_threads()}


def baselines_table(runs: dict[str, list[dict]], screened: dict[str, Screened],
                    naive: float | None) -> dict[str, dict[str, Any]]:
    """Every periodic variant: measured figures (mean over seeds) if it was replayed whole,
    else its screened quality only, marked so; and `naive` (no model: quality only)."""
    table: dict[str, dict[str, Any]] = {}
    for name in periodic_variants():
        s = screened.get(name)
        row: dict[str, Any] = {"status": "screened"}
        if s is not None:
            row.update({"screened_quality": s.quality, "train_row_epochs": s.train_row_epochs,
                        "quality": s.quality})
        if name in runs:
            per_seed = runs[name]
            row.update({"status": "metered",
                        "quality": mean_spread([r["prequential"] for r in per_seed])[0],
                        "energy_kwh": mean_spread([r["energy_kwh"]["total"]
                                                   for r in per_seed])[0],
                        "cpu_seconds": mean_spread([r["cpu_seconds"]["total"]
                                                    for r in per_seed])[0],
                        "wall_seconds": mean_spread([r["wall_seconds"] for r in per_seed])[0]})
        if s is not None or name in runs:
            table[name] = row
    if naive is not None:
        table["naive"] = {"status": "no model", "quality": naive}
    return table


def write_compare(rt: Runtime, runs: dict[str, list[dict]], curves: dict[str, list[list[dict]]],
                  drift_reports: bool = False, *, screened: dict[str, Screened] | None = None,
                  naive: float | None = None, from_batch: int | None = None,
                  orders: list[list[str]] | None = None) -> dict[str, Any]:
    folder = out_dir(rt)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = len(next(iter(runs.values())))
    whole = {p: mean_summary(s) for p, s in runs.items()}
    runs = windowed(runs, curves, from_batch)  # the post-prefix part only, batches >= K
    comp = compare_runs(runs, BASELINE)
    policies = {p: mean_summary(s) for p, s in runs.items()}
    derived = {p: {"overhead_share": overhead_share(s), "seconds_per_batch": seconds_per_batch(s),
                   "energy_kwh_per_batch": s["energy_kwh"]["total"] / max(s["batches"], 1)}
               for p, s in policies.items()}
    metric = policies[BASELINE]["metric"]
    metered_variants = {p: s for p, s in runs.items() if p.startswith("periodic-")}
    iso = {p: iso_quality(rt.cfg.data.task, s, metered_variants)
           for p, s in runs.items() if not p.startswith("periodic-")}
    result: dict[str, Any] = {
        "dataset": rt.cfg.name, "task": rt.cfg.data.task, "metric": metric,
        "baseline": BASELINE, "seeds": seeds, "policies": policies,
        "ratios": comp["ratios"], "derived": derived,
        "iso_quality": iso, "from_batch": from_batch,
        "baselines": baselines_table(runs, screened or {}, naive),
        "tolerance": {"accuracy_points": ACCURACY_TOLERANCE, "mae_relative": MAE_TOLERANCE},
        "orders": orders or [list(runs)] * seeds,
        "energy_method": policies[BASELINE]["energy_method"], "machine": machine(),
        "config": {"retrain": rt.cfg.train.retrain.model_dump(),
                   "finetune": rt.cfg.train.finetune.model_dump(),
                   "retrain_window_batches": rt.cfg.train.retrain_window_batches,
                   "refit_start": rt.cfg.train.refit_start,
                   "periodic_every": rt.cfg.policy.periodic_every,
                   "periodic_window_batches": rt.cfg.policy.periodic_window_batches,
                   "default_policy": rt.cfg.policy.name,
                   "drift_html_reports": drift_reports},
        "curves": {p: f"curves/{p}.csv" for p in runs}, "report_dir": str(folder),
    }
    result["hindsight"] = hindsight(rt.cfg.data.task, result)
    for p, entry in iso.items():  # per policy too, as `policies.<p>.iso_quality`
        policies[p] = {**policies[p], "iso_quality": entry}
    if from_batch:
        result["whole_run"] = whole
    served = served_figures(rt.ws.reports / f"served-{rt.cfg.name}.json")
    if served:
        result["served"] = served
    if seeds > 1:
        result["spread"] = comp["spread"]
        result["runs"] = runs
    write_json(folder / "compare.json", result)
    for p, per_seed in curves.items():
        write_curve_csv(folder / "curves" / f"{p}.csv", per_seed[0])
    (folder / "compare.md").write_text(markdown(result))
    plot_curves(folder / "compare.png", {p: c[0] for p, c in curves.items()}, result)
    plot_frontier(folder / "frontier.png", result)
    return result


def write_curve_csv(path: Path, points: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_FIELDS, extrasaction="ignore")
        w.writeheader()
        for p in points:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in p.items()})


def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _refit_start(start: str) -> str:
    return "the champion's weights" if start == "champion" else "a new model"


def _window(n: int | str | None) -> str:
    if n == "auto":
        return "all history or the last 8 batches, whichever predicts the recent holdouts better"
    return f"the last {n} batches" if n else "all history"


def served_figures(path: Path) -> dict[str, Any] | None:
    """The served mode's cost, if `benchmarks/served.py --out reports/served-<dataset>.json`
    measured it in this home: the replayed ratios hold for served batches only as far as
    a served batch costs what a replayed one does."""
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    keys = ("served_cpu_seconds_per_batch_mean", "ledger_cpu_seconds_per_batch_mean",
            "served_over_replay_cpu", "latency_p50_s", "latency_p95_s", "idle_share_of_core",
            "batches", "load_average_before")
    return {k: raw.get(k) for k in keys} | {
        "replay_cpu_seconds_per_batch": raw.get("replay", {}).get("cpu_seconds_per_batch"),
        "source": str(path)}


def served_lines(r: dict[str, Any]) -> list[str]:
    s = r.get("served")
    if not s:
        return ["## Served mode", "", "Not measured in this home: run `benchmarks/served.py "
                f"--config <config> --out reports/served-{r['dataset']}.json` to put the served "
                "cost beside these replayed figures.", ""]
    return ["## Served mode (`greenloop serve`, the way users run it)", "",
            f"Measured by benchmarks/served.py ({s['source']}): a served batch costs "
            f"{_f(s['served_cpu_seconds_per_batch_mean'], '.3f')} CPU-s over the whole process "
            f"tree (serve + Prefect server), {_f(s['served_over_replay_cpu'], '.2f')}× the "
            f"in-process replay's {_f(s['replay_cpu_seconds_per_batch'], '.3f')} CPU-s for the "
            f"same {s['batches']} batches; drop → processed p50 {_f(s['latency_p50_s'], '.2f')} s, "
            f"p95 {_f(s['latency_p95_s'], '.2f')} s; idle service "
            f"{_f(100 * (s['idle_share_of_core'] or float('nan')), '.2f')}% of a core.", ""]


def hindsight(task: str, r: dict[str, Any]) -> dict[str, Any] | None:
    """`hindsight_choice` over this comparison, with the default policy's cost against it."""
    metered = {p: (s["prequential"], s["energy_kwh"]["total"]) for p, s in r["policies"].items()}
    screened = {n: b["quality"] for n, b in r["baselines"].items()
                if b["status"] == "screened" and b.get("quality") is not None}
    out = hindsight_choice(task, metered, screened)
    default = r["config"]["default_policy"]
    if out is None or default not in metered:
        return out
    ratio = metered[default][1] / out["energy_kwh"] if out["energy_kwh"] else math.nan
    return {**out, "default": default, "default_energy_ratio": ratio,
            "default_within": within_tolerance(task, metered[default][0], out["best_quality"])}


def run_config(name: str) -> dict[str, Any]:
    """The `policy:` section that runs `name` (a policy, or a periodic variant)."""
    return variant_knobs(name) if name.startswith("periodic-") else {"name": name}


def hindsight_lines(r: dict[str, Any]) -> list[str]:
    h = r.get("hindsight")
    if not h:
        return []
    m = r["metric"]
    lines = ["## In hindsight: what to run on this stream", "",
             f"The best {m} any run reached here: {_f(h['best_quality'], '.4f')} "
             f"(`{h['best']}`). The cheapest metered run within tolerance of it: "
             f"**`{h['choice']}`**, {_f(h['quality'], '.4f')}, "
             f"{_f(h['energy_kwh'] * 1000, '.3f')} Wh."]
    if "default" in h:
        verdict = ("within tolerance of the best" if h["default_within"]
                   else "**not** within tolerance of the best")
        lines[-1] += (f" The default policy `{h['default']}` costs "
                      f"{_f(h['default_energy_ratio'], '.2f')}× that and is {verdict}.")
    lines += ["", "This is chosen on the very batches reported above: a pick in hindsight, "
              "not a tuned setting. `greenloop tune --prefix` chooses from a prefix of the "
              "stream only. To run it from now on, the config's `policy:` section:", "",
              "```yaml", yaml.safe_dump({"policy": run_config(h["choice"])},
                                         sort_keys=False).rstrip(), "```"]
    return lines


def markdown(r: dict[str, Any]) -> str:
    m, seeds = r["metric"], r["seeds"]
    spread = r.get("spread", {})

    def ratio(p: str, key: str, fmt: str = ".3f") -> str:
        s = spread.get(p, {}).get(key)
        return _f(r["ratios"][p][key], fmt) + (f" ± {_f(s, fmt)}" if s is not None else "")

    part = (f" on batches ≥ {r['from_batch']} (energy: the measured phases of those batches)"
            if r.get("from_batch") else "")
    lines = [f"# {r['dataset']}: policies compared{part}", "",
             f"Metric: prequential {m} (test-then-train, row-weighted over post-bootstrap "
             f"batches){' — lower is better' if m == 'mae' else ''}. "
             f"{'Mean ± sample std over ' + str(seeds) + ' seeds.' if seeds > 1 else 'One run.'}",
             "", *iso_lines(r), "", *hindsight_lines(r), "", "## All metered runs", "",
             f"Ratios against `{r['baseline']}` (all history, every batch).", "",
             f"| policy | {m} | Δ vs {r['baseline']} | decisions skip/ft/retrain "
             "| energy Wh (total) | energy Wh (train) | CPU-s | wall s | s / batch "
             "| outside training | ratio total | ratio train | ratio CPU-s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, s in r["policies"].items():
        e, c, d = s["energy_kwh"], s["cpu_seconds"], s["decisions"]
        dq = ratio(p, "quality_delta", "+.4f")
        if m == "mae":
            dq += f" ({_f(100 * r['ratios'][p]['quality_relative'], '+.1f')}%)"
        lines.append(
            f"| {p} | {_f(s['prequential'], '.4f')} | {dq} "
            f"| {_f(d['skip'], '.0f')}/{_f(d['finetune'], '.0f')}/{_f(d['retrain'], '.0f')} "
            f"| {_f(e['total'] * 1000, '.3f')} | {_f(e['train'] * 1000, '.3f')} "
            f"| {_f(c['total'], '.1f')} | {_f(s['wall_seconds'], '.1f')} "
            f"| {_f(r['derived'][p]['seconds_per_batch'], '.3f')} "
            f"| {_f(100 * r['derived'][p]['overhead_share'], '.0f')}% "
            f"| {ratio(p, 'energy_total')} | {ratio(p, 'energy_train')} "
            f"| {ratio(p, 'cpu_seconds')} |")
    cfg, mach = r["config"], r["machine"]
    lines += ["", *baseline_lines(r), "", *served_lines(r)]
    lines += ["", "## How it was measured", ""]
    if r.get("from_batch"):
        lines.append(f"- Reported on batches ≥ {r['from_batch']} only: quality over those "
                     "batches, energy/CPU-s/wall-s = the sums of their metered phases from the "
                     "ledger (orchestration outside phases cannot be cut per batch; whole runs "
                     "are in compare.json `whole_run`).")
    lines += [
              f"- Energy: {r['energy_method']}",
              "- Whole-pipeline energy = one CodeCarbon tracker around the whole replay of a "
              "policy (ingest, drift, decide, train, evaluate, register, orchestration); "
              "training energy = the sum of the metered `train` phases. CPU-seconds are the "
              "process's user+system time over the same span, its finished child processes "
              "(DVC, git) included; wall seconds likewise.",
              "- Each policy and variant replays in its own fresh namespace "
              "(`<dataset>-cmp-<policy>`); the order is rotated across seeds "
              f"({'; '.join(' → '.join(o) for o in r['orders'])}); the stream is ingested "
              "once before any policy is metered, so none pays the Parquet writes and DVC adds.",
              "- \"outside training\" = 1 − train energy / whole-pipeline energy.",
              f"- Same stream, same pipeline, same recipes: full retrain {cfg['retrain']} "
              f"from {_refit_start(cfg.get('refit_start', 'scratch'))}, "
              f"fine-tune {cfg['finetune']}; retrain window "
              f"{_window(cfg['retrain_window_batches'])}; periodic retrains every "
              f"{cfg['periodic_every']} batch(es) on "
              f"{_window(cfg.get('periodic_window_batches'))}. Default policy: "
              f"`{cfg['default_policy']}`. HTML drift reports "
              f"{'rendered on retrains' if cfg['drift_html_reports'] else 'off (they would bill '}"
              f"{'' if cfg['drift_html_reports'] else 'periodic, which retrains every batch)'}; "
              "one-time imports and connections are paid before the first policy is metered.",
              f"- Machine: {mach['nproc']} CPUs, {mach['cpu_model']}, Python {mach['python']}, "
              f"{mach['platform']}.", ""]
    return "\n".join(lines)


def iso_lines(r: dict[str, Any]) -> list[str]:
    """The headline: each policy's energy against the cheapest periodic variant that
    matches its quality, with the all-history ratio beside it."""
    m, tol = r["metric"], r["tolerance"]
    within = (f"MAE at most {100 * tol['mae_relative']:g}% above" if m == "mae"
              else f"{m} at least {100 * tol['accuracy_points']:g} points below")
    lines = ["## Iso-quality ratio (the headline)", "",
             "Whole-pipeline energy ÷ that of the cheapest metered periodic variant (cadence × "
             f"window) whose quality is within tolerance ({within} the policy's).", "",
             f"| policy | iso-quality baseline | ratio energy | Δ {m} vs it | ratio CPU-s "
             f"| ratio vs {r['baseline']} |", "|---|---|---|---|---|---|"]
    for p, iso in r["iso_quality"].items():
        allh = _f(r["ratios"][p]["energy_total"], ".3f")
        if iso is None:
            lines.append(f"| {p} | none within tolerance | n/a | n/a | n/a | {allh} |")
            continue
        sd = iso.get("energy_total_spread")
        # Better than every variant by more than the tolerance: against the best of them.
        baseline = (f"none within tolerance: all below; the best, {iso['baseline']}"
                    if iso.get("beats_every_variant") else iso["baseline"])
        lines.append(f"| {p} | {baseline} | {_f(iso['energy_total'], '.3f')}"
                     f"{' ± ' + _f(sd, '.3f') if r['seeds'] > 1 else ''} "
                     f"| {_f(iso['quality_delta'], '+.4f')} | {_f(iso['cpu_seconds'], '.3f')} "
                     f"| {allh} |")
    return lines


def baseline_lines(r: dict[str, Any]) -> list[str]:
    m = r["metric"]
    lines = ["## The periodic family and naive", "",
             "Every variant screened in memory through the same per-batch step (quality and "
             "training row-epochs: rows trained on × the epochs early stopping ran; no "
             "energy); those on the quality/cost frontier replayed "
             "whole and metered. `naive` predicts each batch with the previous labelled "
             "batch's majority class or mean: no model, no training.", "",
             f"| variant | status | {m} | screened {m} | train row-epochs | energy Wh | CPU-s "
             "| wall s |", "|---|---|---|---|---|---|---|---|"]
    for name, b in r["baselines"].items():
        kwh = b.get("energy_kwh")
        lines.append(f"| {name} | {b['status']} | {_f(b.get('quality'), '.4f')} "
                     f"| {_f(b.get('screened_quality'), '.4f')} "
                     f"| {b.get('train_row_epochs', '')} "
                     f"| {_f(kwh * 1000 if kwh is not None else None, '.3f')} "
                     f"| {_f(b.get('cpu_seconds'), '.1f')} | {_f(b.get('wall_seconds'), '.1f')} |")
    return lines


def _smooth(values: list[float], k: int) -> list[float]:
    out = []
    for i in range(len(values)):
        win = [v for v in values[max(0, i - k + 1): i + 1] if not math.isnan(v)]
        out.append(sum(win) / len(win) if win else float("nan"))
    return out


def plot_curves(path: Path, curves: dict[str, list[dict[str, Any]]], r: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max((len(c) for c in curves.values()), default=0)
    smooth = 1 if longest < 20 else 5  # per-batch quality is noisy on long streams
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for p, pts in curves.items():
        upd = [x for x in pts if x["role"] == "update"]
        xs = [x["seq"] for x in upd]
        style = {"linewidth": 2.2} if p in (BASELINE, r["config"]["default_policy"]) else {}
        top.plot(xs, _smooth([x["quality"] for x in upd], smooth), label=p, **style)
        bottom.plot([x["seq"] for x in pts], [x["cumulative_energy_kwh"] * 1000 for x in pts],
                    label=p, **style)
    top.set_ylabel(f"{r['metric']} on the batch, before training"
                   + (f"\n(mean of last {smooth} batches)" if smooth > 1 else ""))
    top.set_title(f"{r['dataset']}: prequential {r['metric']} and cumulative energy per batch")
    top.legend(fontsize=8, ncol=3)
    bottom.set_ylabel("cumulative metered energy (Wh)\n(phases: ingest…register)")
    bottom.set_xlabel("batch (arrival order)")
    bottom.set_yscale("symlog", linthresh=0.1)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(path: Path, r: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for p, s in r["policies"].items():
        x, y = s["energy_kwh"]["total"] * 1000, s["prequential"]
        ax.scatter([x], [y], s=50)
        ax.annotate(p, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("whole-pipeline energy (Wh, log scale)")
    ax.set_ylabel(f"prequential {r['metric']}" + (" (lower is better)" if r["metric"] == "mae"
                                                  else ""))
    ax.set_title(f"{r['dataset']}: energy vs quality, one point per policy")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
