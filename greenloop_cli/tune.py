"""`greenloop tune`: choose the policy's knobs and periodic's schedule on a prefix of the
stream only (registered on the Typer app of greenloop_cli/main.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from greenloop_cli.main import ConfigOpt, HomeOpt, _check_config, _fail, app


@app.command()
def tune(config: ConfigOpt,
         prefix: Annotated[float, typer.Option(
             help="fraction of the stream to tune on: batches 1..ceil(prefix × n)")] = 0.3,
         budget: Annotated[int, typer.Option(
             min=1, help="simulate runs per family (periodic variants, policy settings)")
         ] = 16,
         out: Annotated[Path | None, typer.Option(
             help="where to write the tuned config (default: <config stem>.tuned.yaml)")
         ] = None,
         in_place: Annotated[bool, typer.Option(help="overwrite the config instead")] = False,
         home: HomeOpt = None) -> None:
    """Screen periodic's cadence × window and the policy's thresholds on the prefix (same
    budget each, in memory, no energy) and write the chosen knobs into a config."""
    _check_config(config, home, source=True)
    if in_place and out is not None:
        _fail("give --out or --in-place, not both", 2)
    from greenloop.config import load_config
    from greenloop.train import limit_torch_threads
    from greenloop.tune import (
        load_prefix,
        separation_text,
        stability_text,
        tune_stream,
        tuned_yaml,
    )
    from greenloop.workspace import Workspace
    from tasks.reporting import progress

    limit_torch_threads()  # tune trains hundreds of models: one thread, as the pipeline
    cfg = load_config(config)
    ws = Workspace.from_env(str(home) if home else None)
    try:
        batches, schema, n = load_prefix(cfg, ws.source(cfg.data.path), prefix)
        result = tune_stream(cfg, batches, schema, prefix, budget, total_batches=n,
                             track=progress)
    except (ValueError, OSError) as e:
        _fail(str(e), 2)
    target = config if in_place else out or config.with_name(f"{config.stem}.tuned.yaml")
    target.write_text(tuned_yaml(config.read_text(), result))
    report = target.with_suffix(".json")
    report.write_text(json.dumps(result.as_dict(), indent=2, default=str))
    typer.echo(f"tuned on batches 1..{result.prefix_batches} of {n}; best periodic "
               f"{result.best_periodic}; chosen periodic {result.periodic}")
    typer.echo(f"{result.policy}: {result.chosen} "
               f"({'within' if result.chosen_within else 'NOT within'} tolerance)")
    typer.echo(stability_text(result.stability))
    typer.echo(separation_text(result.separates, len(result.periodic_runs)))
    typer.echo(f"written: {target} (and the screened runs: {report})")
    typer.echo(f"report on the rest: greenloop compare --config {target} "
               f"--from-batch {result.prefix_batches + 1}")
