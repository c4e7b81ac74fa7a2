"""Edges of `compare`: seed configs, per-batch curves from the ledger, and the report
(compare.json, compare.md, per-policy curve CSVs for `dvc plots`, compare.png, frontier.png).
"""

from __future__ import annotations

import csv
import math
import os
import platform
from pathlib import Path
from typing import Any

import yaml

from greenloop.compare import (
    BASELINE,
    batch_curve,
    compare_runs,
    curve_records,
    mean_summary,
    overhead_share,
    read_energy_rows,
    seconds_per_batch,
)
from tasks.reporting import write_json
from tasks.runtime import Runtime, get_runtime
from tasks.versioning import ensure_repo

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


def seed_config(rt: Runtime, config: str, seed: int, drift_reports: bool) -> str:
    """The config a compare run replays with: the given one, with model.seed + `seed`, and
    without HTML drift reports unless asked. A report is rendered per retrain (~1.4 s here),
    so keeping them would bill `periodic`, which retrains on every batch, for a human-facing
    artifact a scheduled pipeline does not produce: the baseline would look worse than it is."""
    if seed == 0 and (drift_reports or rt.cfg.drift.report == "never"):
        return config
    raw = yaml.safe_load(Path(config).read_text())
    raw.setdefault("model", {})["seed"] = rt.cfg.model.seed + seed
    if not drift_reports:
        raw.setdefault("drift", {})["report"] = "never"
    path = out_dir(rt) / "configs" / f"{Path(config).stem}-seed{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def collect_curve(config: str, policy: str, home: str | None) -> list[dict[str, Any]]:
    rt = get_runtime(config, policy, home)
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


def write_compare(rt: Runtime, runs: dict[str, list[dict]], curves: dict[str, list[list[dict]]],
                  drift_reports: bool = False) -> dict[str, Any]:
    folder = out_dir(rt)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = len(next(iter(runs.values())))
    comp = compare_runs(runs, BASELINE)
    policies = {p: mean_summary(s) for p, s in runs.items()}
    derived = {p: {"overhead_share": overhead_share(s), "seconds_per_batch": seconds_per_batch(s),
                   "energy_kwh_per_batch": s["energy_kwh"]["total"] / max(s["batches"], 1)}
               for p, s in policies.items()}
    metric = policies[BASELINE]["metric"]
    result: dict[str, Any] = {
        "dataset": rt.cfg.name, "task": rt.cfg.data.task, "metric": metric,
        "baseline": BASELINE, "seeds": seeds, "policies": policies,
        "ratios": comp["ratios"], "derived": derived,
        "energy_method": policies[BASELINE]["energy_method"], "machine": machine(),
        "config": {"retrain": rt.cfg.train.retrain.model_dump(),
                   "finetune": rt.cfg.train.finetune.model_dump(),
                   "retrain_window_batches": rt.cfg.train.retrain_window_batches,
                   "periodic_every": rt.cfg.policy.periodic_every,
                   "periodic_window_batches": rt.cfg.policy.periodic_window_batches,
                   "default_policy": rt.cfg.policy.name,
                   "drift_html_reports": drift_reports},
        "curves": {p: f"curves/{p}.csv" for p in runs}, "report_dir": str(folder),
    }
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


def _window(n: int | None) -> str:
    return f"the last {n} batches" if n else "all history"


def markdown(r: dict[str, Any]) -> str:
    m, seeds = r["metric"], r["seeds"]
    spread = r.get("spread", {})

    def ratio(p: str, key: str, fmt: str = ".3f") -> str:
        s = spread.get(p, {}).get(key)
        return _f(r["ratios"][p][key], fmt) + (f" ± {_f(s, fmt)}" if s is not None else "")

    lines = [f"# {r['dataset']}: policies compared (baseline `{r['baseline']}`)", "",
             f"Metric: prequential {m} (test-then-train, row-weighted over post-bootstrap "
             f"batches){' — lower is better' if m == 'mae' else ''}. "
             f"{'Mean ± sample std over ' + str(seeds) + ' seeds.' if seeds > 1 else 'One run.'}",
             "",
             f"| policy | {m} | Δ vs periodic | decisions skip/ft/retrain | energy Wh (total) "
             "| energy Wh (train) | CPU-s | wall s | s / batch | outside training "
             "| ratio total | ratio train | ratio CPU-s |",
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
    lines += ["", "## How it was measured", "",
              f"- Energy: {r['energy_method']}",
              "- Whole-pipeline energy = one CodeCarbon tracker around the whole replay of a "
              "policy (ingest, drift, decide, train, evaluate, register, orchestration); "
              "training energy = the sum of the metered `train` phases. CPU-seconds are the "
              "process's user+system time over the same span; wall seconds likewise.",
              "- \"outside training\" = 1 − train energy / whole-pipeline energy.",
              f"- Same stream, same pipeline, same recipes: full retrain {cfg['retrain']}, "
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
