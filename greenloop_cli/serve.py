"""`greenloop serve | watch | ui | fleet`: run greenloop as a service (registered on the
Typer app of greenloop_cli/main.py). Prefect and MLflow are imported inside the commands."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from greenloop.config import load_config
from greenloop.workspace import Workspace
from greenloop_cli.main import HomeOpt, PolicyOpt, _check_config, _env, _fail, app, in_prefect

ConfigsOpt = Annotated[list[Path], typer.Option("--config", "-c", help="dataset config(s) (YAML)")]
PortOpt = Annotated[int, typer.Option(help="Prefect server port when one is started here")]
PollOpt = Annotated[float, typer.Option(help="seconds between two polls of data/landing/")]


def _service_env() -> None:
    _env(verbose=True)  # flow-run logs should reach the Prefect UI
    # A served flow run starts within ~1-2 s of its event instead of ~10 s (Prefect default).
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")


def _datasets(configs: list[Path]) -> list[str]:
    for c in configs:
        _check_config(c)
    return [load_config(c).name for c in configs]


def _prefect_ui_hint() -> str:
    api = os.environ.get("PREFECT_API_URL")
    return api.removesuffix("/").removesuffix("/api") if api else \
        "http://127.0.0.1:4200 (while `greenloop serve` runs)"


@app.command()
def serve(config: ConfigsOpt, policy: PolicyOpt = None, home: HomeOpt = None,
          port: PortOpt = 4200,
          watch: Annotated[bool, typer.Option(help="also watch data/landing/<dataset>/")] = True,
          poll_seconds: PollOpt = 1.0,
          limit: Annotated[int, typer.Option(help="max concurrent flow runs")] = 4,
          ui: Annotated[bool, typer.Option(help="also start the MLflow UI")] = False,
          ui_port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000) -> None:
    """Serve the ingest/update/scheduled-update/full-retrain deployments (and watch)."""
    _service_env()
    datasets = _datasets(config)
    ws = Workspace.from_env(home)
    from greenloop_cli.servers import ServerError, prefect_server, start_mlflow_ui, wait_healthy

    mlflow_ui = None
    # Until Prefect's runner takes SIGTERM over, make it unwind (and stop the servers).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if ui:
            cfg = load_config(config[0])
            uri = (os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.tracking_uri
                   or ws.default_tracking_uri())
            if not uri.startswith(("http://", "https://")):
                mlflow_ui = start_mlflow_ui(uri, ws.artifacts, ws.state / "logs", ui_port)
        with prefect_server(ws.state, port) as server:
            # PREFECT_API_URL is in the environment now, before Prefect is first imported.
            typer.echo(f"Prefect UI: {server.url}  (API {os.environ['PREFECT_API_URL']})")
            if mlflow_ui is not None:
                wait_healthy(mlflow_ui, timeout_s=120)
                typer.echo(f"MLflow UI: {mlflow_ui.url}")
            from flows.deploy import serve_all
            from tasks.events import watch_landing

            stop = threading.Event()
            if watch:
                threading.Thread(target=watch_landing, name="greenloop-watch", daemon=True,
                                 args=(datasets, ws.home, poll_seconds, stop)).start()
            try:
                serve_all([str(c) for c in config], policy, ws.home, limit)
            finally:
                stop.set()
    except ServerError as e:
        _fail(str(e))
    finally:
        if mlflow_ui is not None:
            mlflow_ui.stop()


@app.command()
def deploy(config: ConfigsOpt, pool: Annotated[str, typer.Option(
               help="Prefect work pool (type process; created if missing)")] = "greenloop",
           policy: PolicyOpt = None, home: HomeOpt = None) -> None:
    """Register the same deployments on a work pool, for `prefect worker start` processes
    in place of `serve` (needs PREFECT_API_URL)."""
    _service_env()
    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: work pools live on a Prefect server")
    _datasets(config)
    from flows.deploy import deploy_to_pool

    names = deploy_to_pool([str(c) for c in config], pool, policy,
                           Workspace.from_env(home).home)
    typer.echo("\n".join(f"deployed {n} -> pool {pool}" for n in names))
    typer.echo(f"now: prefect worker start --pool {pool}   (and greenloop watch --config ...)")


@app.command()
def watch(config: ConfigsOpt, home: HomeOpt = None, poll_seconds: PollOpt = 1.0) -> None:
    """Emit `greenloop.batch.arrived` once per complete file in data/landing/<dataset>/."""
    _service_env()
    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: events need a Prefect server "
              "(`greenloop serve` starts one and watches too)")
    datasets = _datasets(config)
    from tasks.events import watch_landing

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        watch_landing(datasets, Workspace.from_env(home).home, poll_seconds, stop)
    except KeyboardInterrupt:
        pass


@app.command()
def ui(config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
       home: HomeOpt = None, port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000
       ) -> None:
    """The MLflow UI (one worker, 127.0.0.1) on the project's tracking store."""
    _env()
    ws = Workspace.from_env(home)
    cfg = None
    if config is not None:
        _check_config(config)
        cfg = load_config(config)
    uri = (os.environ.get("MLFLOW_TRACKING_URI") or (cfg.tracking.tracking_uri if cfg else None)
           or ws.default_tracking_uri())
    prefect_ui = _prefect_ui_hint()
    if uri.startswith(("http://", "https://")):
        typer.echo(f"MLflow UI: {uri} (an existing tracking server)\nPrefect UI: {prefect_ui}")
        return
    from greenloop_cli.servers import ServerError, start_mlflow_ui, wait_healthy

    server = start_mlflow_ui(uri, ws.artifacts, ws.state / "logs", port)
    # The server is in its own process group: stop it on SIGTERM too, not only on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        waited = wait_healthy(server, timeout_s=120)
        typer.echo(f"MLflow UI: {server.url}  (store {uri}, up in {waited:.1f} s)\n"
                   f"Prefect UI: {prefect_ui}\nCtrl-C to stop.")
        server.process.wait()  # type: ignore[union-attr]
    except ServerError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command()
def fleet(configs: Annotated[list[Path] | None, typer.Argument(help="more configs")] = None,
          configs_opt: Annotated[list[Path] | None, typer.Option(
              "--configs", "--config", "-c", help="configs, e.g. --configs configs/*.yaml")] = None,
          policy: PolicyOpt = None, home: HomeOpt = None,
          replay_batches: Annotated[int | None, typer.Option(
              help="feed this many batches of each bundled stream (else: data/landing/)")] = None,
          dask_address: Annotated[str | None, typer.Option(
              help="run the models on an existing Dask cluster, e.g. tcp://10.0.0.5:8786")] = None,
          max_workers: Annotated[int | None, typer.Option(help="threads (no Dask)")] = None,
          verbose: bool = False) -> None:
    """Update many models in one Prefect flow run, one task per model."""
    _env(verbose)
    paths = [*(configs_opt or []), *(configs or [])]
    if not paths:
        _fail("give at least one config: greenloop fleet --configs configs/*.yaml", 2)
    _datasets(paths)
    from flows.fleet import run_fleet

    # Absolute paths: on Dask workers the working folder is not ours.
    results = in_prefect(run_fleet, [str(p.resolve()) for p in paths], policy,
                         str(Workspace.from_env(home).home), replay_batches, dask_address,
                         max_workers)
    for r in results:
        extra = (f"{r['batches']} batches" if "batches" in r else
                 f"{r['processed']} processed, {len(r['rejected'])} rejected")
        typer.echo(f"{r['model']}: {extra}; champion version {r['champion']}")
