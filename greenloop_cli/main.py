"""The front door: `greenloop run | ingest | status | ...`.

Heavy libraries (torch, Prefect, MLflow, Evidently) are imported inside the commands
that need them, so `greenloop --help` answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from greenloop_cli.servers import RECORDER_BATCHING

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Drift-gated, energy-metered continual learning.")

QUIET_ENV = {
    "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true", "CODECARBON_LOG_LEVEL": "error",
    "DVC_NO_ANALYTICS": "1", "GIT_PYTHON_REFRESH": "quiet",
    # A loaded 2-core machine can take longer than the 20 s default to start it.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="dataset config (YAML)")]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="override the config's policy")]
HomeOpt = Annotated[Path | None,
                    typer.Option("--home", help="project folder (default: $GREENLOOP_HOME or .)")]


def _env(verbose: bool = False) -> None:
    # RECORDER_BATCHING reaches the temporary Prefect server, a child of this process.
    for k, v in {**QUIET_ENV, **RECORDER_BATCHING}.items():
        os.environ.setdefault(k, v)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "false")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


OUTSIDE_HINT = ("greenloop reads and writes only inside its home (--home or $GREENLOOP_HOME, "
                "default the current folder): put the file under the home's data/ folder "
                "and give data.path relative to the home")


def _check_config(config: Path, home: Path | None = None, source: bool = False) -> None:
    """The config is valid; with `source`, its data.path is inside the home's data/
    folder, said before any flow starts (a flow's failure would log a traceback)."""
    from greenloop.config import ConfigError, load_config
    from greenloop.workspace import OutsideWorkspace, Workspace

    try:
        cfg = load_config(config)
    except ConfigError as e:
        _fail(str(e), 2)
    if source:
        ws = Workspace.from_env(home)
        try:
            path = ws.source(cfg.data.path)
        except OutsideWorkspace as e:
            _fail(f"data.path: {e}. {OUTSIDE_HINT}", 2)
        if not path.is_file():
            _fail(f"data.path: no file at {path} (data.path is read relative to the home, "
                  f"{ws.home}: pass --home, or set GREENLOOP_HOME, to the folder that holds "
                  f"data/)", 2)


def in_prefect(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from flows import call_flow
    from greenloop_cli.ephemeral import start_tied_ephemeral_server

    start_tied_ephemeral_server()  # with no API URL: a temporary server that dies with us
    return call_flow(fn, *args, **kwargs)


@app.command()
def run(config: ConfigOpt, policy: PolicyOpt = None,
        max_batches: Annotated[int | None, typer.Option(help="stop after N batches")] = None,
        restart: Annotated[bool, typer.Option(help="forget this stream and start over")] = False,
        home: HomeOpt = None, verbose: bool = False) -> None:
    """Replay the dataset as a stream of arrivals through `update`, then summarize."""
    _env(verbose)
    _check_config(config, home, source=True)
    from flows.replay import replay
    from tasks.reporting import show, summary_table

    summary = in_prefect(replay, str(config), policy, max_batches, restart,
                         str(home) if home else None)
    show([summary_table(summary)])
    out = Path(home or ".") / "reports" / f"{summary['dataset']}-{summary['policy']}"
    typer.echo(f"summary: {out / 'summary.json'}\nMLflow UI: greenloop ui --config {config}")


@app.command()
def prepare(config: ConfigOpt, home: HomeOpt = None) -> None:
    """Cut the configured source into arrival files under data/stream/<dataset>/."""
    _env()
    _check_config(config, home, source=True)
    from greenloop.config import load_config
    from greenloop.data import read_table, write_stream
    from greenloop.workspace import Workspace

    cfg, ws = load_config(config), Workspace.from_env(home)
    paths = write_stream(read_table(ws.source(cfg.data.path)), cfg.data, ws.stream(cfg.name))
    typer.echo(f"{len(paths)} batch files in {ws.stream(cfg.name)}")


@app.command()
def bootstrap(config: ConfigOpt, policy: PolicyOpt = None, home: HomeOpt = None,
              verbose: bool = False) -> None:
    """Start the stream afresh and train the first champion on the bootstrap batches."""
    _env(verbose)
    _check_config(config, home, source=True)
    from flows.replay import replay
    from greenloop.config import load_config

    n = load_config(config).data.bootstrap_batches
    summary = in_prefect(replay, str(config), policy, n, True, str(home) if home else None,
                         "bootstrap.json")
    typer.echo(f"champion: {summary['mlflow']['registered_model']} "
               f"v{summary['mlflow']['champion_version']} after {summary['batches']} batches")


@app.command()
def ingest(path: Path, config: ConfigOpt, policy: PolicyOpt = None, home: HomeOpt = None,
           process: Annotated[bool, typer.Option(help="also run the update")] = True,
           verbose: bool = False) -> None:
    """Process one arrived batch file (exits non-zero, with the reason, if rejected)."""
    _env(verbose)
    if not verbose:
        # A rejection is an answer, not a crash: said in one line below, without Prefect's
        # task and flow tracebacks on the console (the API log handler still gets them).
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    _check_config(config)
    # A relative PATH is the shell's, relative to the current folder; one that names no
    # file there is taken relative to the home, as before. (abspath, not resolve: a
    # symbolic link must reach the ingest's check as one.)
    if not path.is_absolute() and path.exists():
        path = Path(os.path.abspath(path))
    from greenloop.data import BatchRejected
    from greenloop.redact import redact

    dead: list[dict[str, Any]] = []
    try:
        if process:
            from flows.update import update

            results = in_prefect(update, str(config), path=str(path), policy=policy,
                                 home=str(home) if home else None)
            for r in results:
                if r.get("failed"):  # dead-lettered: the stream went on without it
                    typer.echo(f"batch {r['seq']}: failed after {r['attempts']} attempt(s), "
                               f"set aside ({r['error'][:200]}); `greenloop retry` puts it back")
                    dead += [r] if r.get("arrival") else []
                    continue
                typer.echo(f"batch {r['seq']}: {r['decision']}"
                           + (f" -> version {r['version']}" if r["version"] else "")
                           + (" (champion)" if r["promoted"] else ""))
            if not results:
                typer.echo("nothing new to process (duplicate batch)")
        else:
            from flows.update import ingest as ingest_flow

            r = in_prefect(ingest_flow, str(path), str(config), policy, str(home) if home else None)
            typer.echo(f"batch {r['seq']} {'duplicate' if r['duplicate'] else 'accepted'}")
    except BatchRejected as e:
        _fail(f"rejected: {e}")
    except Exception as e:  # an outage or a crash mid-update: the batch stays pending
        if verbose:
            raise
        first = redact((str(e).strip().splitlines() or [""])[0])[:200]
        _fail(f"update failed, accepted batches stay pending and are processed by the next "
              f"update ({type(e).__name__}: {first})")
    if dead:  # outside the try: typer.Exit is an Exception too
        _fail(f"batch {dead[0]['seq']} ({path.name}) failed and was set aside: "
              f"{dead[0]['error'][:200]}")


@app.command()
def status(config: ConfigOpt, policy: PolicyOpt = None, home: HomeOpt = None,
           history: Annotated[bool, typer.Option(help="list the alias history")] = False,
           last: int = 10) -> None:
    """The champion, its lineage and energy bill, and the last decisions."""
    _env()
    _check_config(config)
    from greenloop.status import render_status

    render_status(str(config), policy, str(home) if home else None, history, last)


# More commands register themselves on `app` when their module is imported:
# compare, rollback, report, serve/watch/ui/fleet (greenloop_cli/compare.py, reliability.py,
# report.py, serve.py).
from greenloop_cli import compare, predict, reliability, report, serve, tune  # noqa: E402,F401


def main() -> None:
    """The console entry: `app`, with a path outside the home said in one line (a config's
    `data.path` elsewhere is the first thing a new user meets), not a traceback."""
    from greenloop.workspace import OutsideWorkspace

    try:
        app(prog_name="greenloop")
    except OutsideWorkspace as e:
        typer.secho(f"error: {e}. {OUTSIDE_HINT}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
