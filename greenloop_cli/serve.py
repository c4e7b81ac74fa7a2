"""`greenloop serve | watch | ui | fleet`: run greenloop as a service (registered on the
Typer app of greenloop_cli/main.py). Prefect and MLflow are imported inside the commands."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from greenloop.config import load_config
from greenloop.linger import Linger
from greenloop.service import ProcessTree
from greenloop.workspace import Workspace
from greenloop_cli.main import HomeOpt, PolicyOpt, _check_config, _env, _fail, app, in_prefect
from greenloop_cli.wake import IdleExitOpt, linger_option, stop_when_idle

if TYPE_CHECKING:  # imported inside the commands at run time (Prefect, MLflow, torch)
    from tasks.runtime import Runtime
    from tasks.service import ServiceMeter

ConfigsOpt = Annotated[list[Path], typer.Option("--config", "-c", help="dataset config(s) (YAML)")]
PortOpt = Annotated[int, typer.Option(help="Prefect server port when one is started here")]
PollOpt = Annotated[float, typer.Option(help="seconds between two polls of data/landing/ "
                                          "(a file is complete after two equal polls)")]


def _service_env() -> None:
    _env(verbose=True)  # flow-run and task-run logs should reach the Prefect UI
    # Arrivals run warm in serve's own thread; the runner's polling only starts cron and
    # manual deployment runs, so it need not wake every few seconds (idle cost).
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "30")
    # Prefect's own bookkeeping logs outside any run (a task worker's): not for the UI.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _client_auth(home: Path | None) -> None:
    """The auth string of the project's served Prefect server (state/prefect/auth),
    unless PREFECT_API_AUTH_STRING is set. Before Prefect is imported: its settings are
    read once."""
    from greenloop_cli.servers import ServerError, use_project_auth

    try:
        use_project_auth(Workspace.from_env(home).home)
    except ServerError as e:
        _fail(str(e))


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
          worker: Annotated[bool, typer.Option(
              help="process arrivals in this process (else: `greenloop worker` elsewhere)")
          ] = True,
          poll_seconds: PollOpt = 0.5,
          limit: Annotated[int, typer.Option(help="max concurrent deployment flow runs")] = 4,
          ui: Annotated[bool, typer.Option(help="also start the MLflow UI")] = False,
          ui_port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000,
          idle_exit: IdleExitOpt = None) -> None:
    """Serve the deployments, process arrivals warm (one task run each) and watch."""
    _service_env()
    datasets = _datasets(config)
    linger = linger_option(idle_exit)
    if linger is not None and not (worker and watch):
        _fail("--idle-exit needs the arrivals watched and processed here (no --no-worker, "
              "no --no-watch): it stops serve when no arrival has run for a while", 2)
    ws = Workspace.from_env(home)
    from greenloop_cli.servers import (
        ServerError,
        auth_path,
        prefect_server,
        start_mlflow_ui,
        wait_healthy,
    )

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
            if server.auth is not None:  # the path only: the string is never printed
                typer.echo(f"Prefect UI password: the contents of {auth_path(ws.state)}")
            if mlflow_ui is not None:
                wait_healthy(mlflow_ui, timeout_s=120)
                typer.echo(f"MLflow UI: {mlflow_ui.url}")
            others = {p.process.pid for p in (server, mlflow_ui)  # type: ignore[attr-defined]
                      if getattr(p, "process", None) is not None}
            _serve_warm([str(c) for c in config], datasets, policy, ws, server, watch, worker,
                        poll_seconds, limit, linger, others)
    except ServerError as e:
        _fail(str(e))
    finally:
        if mlflow_ui is not None:
            mlflow_ui.stop()


def _serve_warm(configs: list[str], datasets: list[str], policy: str | None, ws: Workspace,
                server: object, watch: bool, worker: bool, poll_seconds: float,
                limit: int, linger: Linger | None = None,
                other_pids: frozenset[int] | set[int] = frozenset()) -> None:
    """Deployments on the runner (main thread), arrivals in a thread of their own, the
    landing watcher (a thread) and the service meter, until interrupted (or, with
    `linger`, until idle long enough)."""
    from flows.confine import SERVED_HOME_ENV
    from flows.deploy import limit_name, prepared_deployments, release_lost_slots
    from flows.warm import start_local, submit, use_meter
    from tasks.events import watch_landing
    from tasks.landing import unaccounted
    from tasks.runtime import get_runtime
    from tasks.service import ServiceMeter

    home = str(ws.home)
    # The runner's flow runs inherit it: they refuse any other home (flows/confine.py).
    os.environ[SERVED_HOME_ENV] = home
    deps = prepared_deployments(configs, policy, home)
    runtimes = {d: get_runtime(c, policy, home) for c, d in zip(configs, datasets, strict=True)}
    fresh_server = getattr(server, "process", None) is not None  # started here, just now
    # Start-up is everything this tree did before it serves, less the catch-up below.
    tree = ProcessTree([os.getpid(), *([server.process.pid] if fresh_server else [])])  # type: ignore[attr-defined]
    cpu_before_catch_up = tree.cpu_seconds()
    for rt in runtimes.values():  # what a killed serve left behind
        if fresh_server:  # its slot: no lease left on this server to expire
            freed = asyncio.run(release_lost_slots(limit_name(rt.model_name)))
            if freed:
                typer.echo(f"{rt.model_name}: freed {freed} update slot(s) held when the "
                           f"last serve stopped")
        if worker:  # its accepted, unprocessed batches
            catch_up(rt)
    catch_up_cpu = tree.cpu_seconds() - cpu_before_catch_up
    meter = None
    if worker:
        pids = [os.getpid()]
        process = getattr(server, "process", None)
        if process is not None:  # a server started here is on the bill; an external one not
            pids.append(process.pid)
        first = next(iter(runtimes.values()))
        meter = ServiceMeter(first.cfg.energy, [first.ledger], pids)
        for rt in runtimes.values():
            session_run(rt, meter)
        use_meter(meter)
        # One console line per hand-over ("arrived:", the watcher) and one per end, whatever
        # Prefect's log level: an operator (and the served soak) can tell serve is idle.
        start_local(on_error=lambda e: typer.echo(f"arrival failed: {type(e).__name__}: {e}"),
                    on_done=lambda path: typer.echo(f"done: {path}"))
        typer.echo("arrivals are processed here, warm (task runs `arrival` in the Prefect UI)")

    stop = threading.Event()
    if watch:
        config_of = dict(zip(datasets, configs, strict=True))

        def report(path: Path, dataset: str, size_bytes: int) -> None:
            submit(path, config_of[dataset], policy, home)

        threading.Thread(
            target=watch_landing, name="greenloop-watch", daemon=True,
            kwargs=dict(datasets=datasets, home=ws.home, poll_seconds=poll_seconds, stop=stop,
                        report=report,
                        unaccounted=lambda d, files: unaccounted(runtimes[d], files))).start()
    startup_cpu = tree.cpu_seconds() - catch_up_cpu
    if meter is not None:
        meter.startup_cpu_seconds = startup_cpu  # `greenloop status` weighs it against idle
    typer.echo(f"start-up: {startup_cpu:.1f} CPU-s (this process"
               + (" and the Prefect server it started)" if fresh_server else ")"))
    if linger is not None:
        rule = (f"after {linger.fixed_seconds:g} s idle" if linger.fixed_seconds is not None
                else "once the idle time has cost as much as this start-up")
        typer.echo(f"--idle-exit: stops {rule}")
        stop_when_idle(linger, tree, startup_cpu, stop, poll_seconds, set(other_pids))
    from prefect import serve as prefect_serve

    try:
        prefect_serve(*deps, limit=limit, print_starting_message=False)
    finally:
        os.environ.pop(SERVED_HOME_ENV, None)
        stop.set()
        if meter is not None:
            meter.close()


def catch_up(rt: Runtime) -> None:
    """Batches accepted and not processed when the last serve stopped (killed mid-update,
    or refused while MLflow was down) are processed now, before anything else starts,
    instead of waiting for the next arrival or the scheduled update. Here, in the main
    thread and before the runner: a first Prefect concurrency slot taken in a task run
    while `prefect.serve` registers its deployments deadlocked in Prefect's own event
    loop threads (py-spy: the lease service waiting on the global loop, itself waiting
    on the registration). Taking the slot here also creates that service first."""
    from flows.deploy import describe, update_with_slot

    pending = len(rt.ledger.batches(rt.model_name, ("accepted",)))
    if pending:
        typer.echo(f"{rt.model_name}: {pending} batch(es) accepted and not yet processed: "
                   f"processing them first")
    for r in update_with_slot(rt):
        typer.echo(describe(r))


def session_run(rt: Runtime, meter: ServiceMeter) -> None:
    """One MLflow run per served session and model: the per-batch runs nest under it, and
    it carries the session's whole bill, idle included (rewritten at every flush)."""
    from greenloop.service import Window

    tracker, model = rt.tracker, rt.model_name
    run_id = tracker.start_parent(f"{model} served session {meter.id}", {
        "mode": "served", "model": model, "policy": rt.policy_name,
        "service_session": meter.id, "counted": meter.tree.describe()})
    rt.parent_run_id = run_id

    def report(whole: Window, arrivals: Window, n: int, stopped: bool) -> None:
        metrics = {"service.cpu_seconds": whole.cpu_seconds, "service.energy_kwh": whole.energy_kwh,
                   "service.wall_seconds": whole.wall_seconds, "service.arrivals": n,
                   "idle.cpu_seconds": whole.cpu_seconds - arrivals.cpu_seconds,
                   "idle.energy_kwh": whole.energy_kwh - arrivals.energy_kwh,
                   "idle.wall_seconds": whole.wall_seconds - arrivals.wall_seconds}
        if stopped:
            tracker.finish_parent(run_id, metrics, {})
        else:
            tracker.log_metrics(run_id, metrics)

    meter.on_flush.append(report)


@app.command()
def worker(config: ConfigsOpt, policy: PolicyOpt = None, home: HomeOpt = None,
           limit: Annotated[int, typer.Option(help="arrivals processed at once")] = 1) -> None:
    """A warm task worker for arrivals (beside `greenloop serve --no-worker` or on another
    machine with the same project home and PREFECT_API_URL)."""
    _service_env()
    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: a task worker takes its runs from a Prefect server")
    _client_auth(home)
    _datasets(config)
    from flows.warm import start_worker

    thread = start_worker(limit=limit, on_error=lambda e: typer.echo(f"stopped: {e}", err=True))
    typer.echo(f"task worker for `arrival` runs ({limit} at a time); Ctrl-C to stop")
    try:
        thread.join()
    except KeyboardInterrupt:
        pass


@app.command()
def deploy(config: ConfigsOpt, pool: Annotated[str, typer.Option(
               help="Prefect work pool (type process; created if missing)")] = "greenloop",
           policy: PolicyOpt = None, home: HomeOpt = None) -> None:
    """Register the same deployments on a work pool, for `prefect worker start` processes
    in place of `serve` (needs PREFECT_API_URL)."""
    _service_env()
    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: work pools live on a Prefect server")
    _client_auth(home)
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
    _client_auth(home)
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
