"""`greenloop report`: one batch's Evidently drift report, rendered on demand
(tasks/report.py; registered on the Typer app of greenloop_cli/main.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from greenloop_cli.main import ConfigOpt, HomeOpt, PolicyOpt, _check_config, _env, _fail, app


@app.command()
def report(config: ConfigOpt,
           seq: Annotated[int | None, typer.Option(
               "--seq", min=1, help="the batch's seq (status); default: the last checked")] = None,
           policy: PolicyOpt = None, home: HomeOpt = None) -> None:
    """Render batch SEQ's (default: the last checked batch's) Evidently drift report
    against the reference it was judged by; the HTML is written under state/reports/ and
    added to the batch's MLflow run."""
    _env()
    _check_config(config)
    from tasks.report import ReportUnavailable, render_batch_report
    from tasks.runtime import get_runtime

    rt = get_runtime(str(config), policy, str(home) if home else None)
    try:
        path = render_batch_report(rt, seq)
    except ReportUnavailable as e:
        _fail(str(e), 2)
    typer.echo(str(path))
