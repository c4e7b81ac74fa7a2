"""`greenloop compare`: every policy over the same stream, side by side (registered on the
Typer app of greenloop_cli/main.py). Prefect, MLflow and torch are imported inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from greenloop_cli.main import ConfigOpt, HomeOpt, _check_config, _env, _fail, app, in_prefect


@app.command()
def compare(config: ConfigOpt,
            policies: Annotated[str | None, typer.Option(
                help="comma-separated policies or periodic variants (periodic-e4-w8; default: "
                     "every policy but periodic, whose family is searched anyway)")
            ] = None,
            seeds: Annotated[int, typer.Option(min=1, help="repeat with model.seed + 0..N-1")] = 1,
            drift_reports: Annotated[bool, typer.Option(
                help="render the HTML drift report on retrains (off: it would bill periodic)")
            ] = False,
            from_batch: Annotated[int | None, typer.Option(
                min=1, help="report quality and energy on batches >= K only (after a tuned "
                            "prefix)")] = None,
            baselines: Annotated[str, typer.Option(
                help="periodic variants replayed whole: frontier (screened quality vs cost), "
                     "iso (each policy's screened match), all (16), none (all history only)")
            ] = "frontier",
            home: HomeOpt = None, verbose: bool = False) -> None:
    """Screen the periodic family, replay each policy and the frontier variants (fresh, own
    namespace each) and write reports/compare-<dataset>/ led by the iso-quality ratio."""
    _env(verbose)
    _check_config(config, home, source=True)
    from greenloop.compare import BASELINE_CHOICES
    from greenloop.policy import NAIVE, POLICIES, parse_variant

    names = [p.strip() for p in policies.split(",") if p.strip()] if policies else None
    unknown = []
    for name in names or []:
        try:
            if name not in POLICIES and name != NAIVE:
                parse_variant(name)
        except ValueError:
            unknown.append(name)
    if unknown:
        _fail(f"unknown policy {', '.join(unknown)}; choose from {', '.join(sorted(POLICIES))}, "
              "naive, or a periodic variant such as periodic-e4-w8 / periodic-e1-wall", 2)
    if baselines not in BASELINE_CHOICES:
        _fail(f"--baselines must be one of {', '.join(BASELINE_CHOICES)}, got {baselines!r}", 2)
    from flows.compare import compare as compare_flow

    result = in_prefect(compare_flow, str(config), names, seeds, str(home) if home else None,
                        drift_reports, from_batch, baselines)
    out = Path(result["report_dir"])
    typer.echo((out / "compare.md").read_text())
    typer.echo(f"written: {out}/compare.json, compare.md, compare.png, frontier.png, curves/")
