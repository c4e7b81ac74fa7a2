"""`greenloop predict`: score a file with the champion (or a given version) through
MLflow's pyfunc loader, the same one `mlflow models serve` uses (registered on the Typer
app of greenloop_cli/main.py). MLflow and torch are imported inside the command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from greenloop_cli.main import ConfigOpt, HomeOpt, PolicyOpt, _check_config, _env, _fail, app


def predictions_path(file: Path) -> Path:
    return file.with_name(f"{file.stem}.predictions.csv")


@app.command()
def predict(config: ConfigOpt,
            file: Annotated[Path, typer.Argument(help="rows to score (CSV or Parquet)")],
            version: Annotated[int | None, typer.Option(
                "--version", min=1, help="a model version (default: the champion)")] = None,
            policy: PolicyOpt = None, home: HomeOpt = None) -> None:
    """Score FILE with the champion; write <FILE stem>.predictions.csv beside it."""
    _env()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout: the path
    _check_config(config)
    if not file.is_file():
        _fail(f"no such file: {file}", 2)
    from greenloop.data import BatchRejected, read_table
    from tasks.mlmodel import ScoringError, load_version, score
    from tasks.runtime import get_runtime

    rt = get_runtime(str(config), policy, str(home) if home else None)
    try:
        frame = read_table(file)
        loaded = load_version(rt.tracking_uri, rt.model_name, version)
        frame["prediction"] = score(loaded, frame)
    except (BatchRejected, ScoringError) as e:
        _fail(f"{file}: {e}" if isinstance(e, ScoringError) else str(e), 2)
    out = predictions_path(file)
    frame.to_csv(out, index=False)
    typer.echo(str(out))
