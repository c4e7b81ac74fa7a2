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
                help="comma-separated policies (default: all; periodic is always included)")
            ] = None,
            seeds: Annotated[int, typer.Option(min=1, help="repeat with model.seed + 0..N-1")] = 1,
            drift_reports: Annotated[bool, typer.Option(
                help="render the HTML drift report on retrains (off: it would bill periodic)")
            ] = False,
            home: HomeOpt = None, verbose: bool = False) -> None:
    """Replay the stream once per policy (fresh each time) and write reports/compare-<dataset>/."""
    _env(verbose)
    _check_config(config)
    from greenloop.policy import POLICIES

    names = [p.strip() for p in policies.split(",") if p.strip()] if policies else None
    unknown = sorted(set(names or []) - set(POLICIES))
    if unknown:
        _fail(f"unknown policy {', '.join(unknown)}; choose from {', '.join(sorted(POLICIES))}", 2)
    from flows.compare import compare as compare_flow

    result = in_prefect(compare_flow, str(config), names, seeds, str(home) if home else None,
                        drift_reports)
    out = Path(result["report_dir"])
    typer.echo((out / "compare.md").read_text())
    typer.echo(f"written: {out}/compare.json, compare.md, compare.png, frontier.png, curves/")
