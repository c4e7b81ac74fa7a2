"""`greenloop serve`, warm: arrivals are Prefect task runs in serve's own long-lived process
(one thread, a task run per arrival), not a new process per flow run, and every
arrival's whole window is on the bill (its `service` phase), with the service's standing
cost in the ledger, in MLflow (one run per served session, the batch runs nested under
it) and in `greenloop status`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.services import (
    Proc,
    api,
    drop,
    flow_runs,
    free_port,
    greenloop,
    http_ok,
    ledger_rows,
    login,
    project_home,
    service_env,
    stream_files,
    wait_until,
)

pytestmark = [pytest.mark.scale, pytest.mark.slow]


def processed(home: Path, n: int) -> bool:
    rows = ledger_rows(home, "SELECT COUNT(*) FROM batches WHERE model='elec2-gated' "
                             "AND status='processed'")
    return bool(rows) and rows[0][0] >= n


def completed_arrivals(base: str, n: int) -> dict[str, dict] | None:
    """The arrival task runs by name, once arrivals 1..n are COMPLETED. The ledger says
    `processed` inside the task run; its state reaches the server a moment later (a CI run
    once read the fifth still RUNNING)."""
    runs = {r["name"]: r for r in api(base, "/task_runs/filter", {"limit": 200})
            if r["name"].startswith("arrival-")}
    done = all(runs.get(f"arrival-batch-{i:05d}", {}).get("state_type") == "COMPLETED"
               for i in range(1, n + 1))
    return runs if done else None


def test_arrivals_run_warm_in_serve_and_are_billed_whole(tmp_path: Path) -> None:
    home = project_home(tmp_path)
    config = home / "configs" / "elec2.yaml"
    batches = stream_files(home, config)
    landing = home / "data" / "landing" / "elec2"
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    env = service_env(home)
    serve = Proc(greenloop("serve", "--config", str(config), "--home", str(home), "--port",
                           str(port)), tmp_path / "serve.log", env)
    try:
        wait_until(lambda: http_ok(f"{base}/health"), 180, "Prefect server", procs=(serve,))
        login(base, home)  # the server serve started wants its auth string and CSRF tokens
        for b in batches[:4]:  # the bootstrap
            drop(b, landing)
        wait_until(lambda: processed(home, 4), 300, "the bootstrap", procs=(serve,))
        drop(batches[4], landing)
        wait_until(lambda: processed(home, 5), 120, "batch 5", procs=(serve,))
        digest = ledger_rows(home, "SELECT hash FROM batches WHERE seq=5")[0][0]
        service = wait_until(lambda: ledger_rows(
            home, "SELECT cpu_seconds, wall_seconds FROM energy WHERE phase='service' "
                  "AND hash=?", (digest,)), 30, "batch 5's service row", procs=(serve,))

        arrivals = wait_until(lambda: completed_arrivals(base, 5), 60,
                              "5 completed arrival task runs", procs=(serve,))
        assert {f"arrival-batch-{i:05d}" for i in range(1, 6)} <= set(arrivals)
        fifth = arrivals["arrival-batch-00005"]
        assert fifth["flow_run_id"] is None
        logs = wait_until(lambda: [g["message"] for g in api(base, "/logs/filter", {
            "logs": {"task_run_id": {"any_": [fifth["id"]]}}, "limit": 50})
            if "batch 5:" in g["message"]], 30, "the arrival's log", procs=(serve,))
        assert logs
        # No arrival started a deployment flow run (a new process each).
        assert flow_runs(base, ["ingest-elec2", "update-elec2"]) == []
    finally:
        serve.stop()

    cpu_s, wall_s = service[0]
    assert wall_s > 0
    # The hand-over and the server's share, measured. One arrival's share (its window
    # less its phases, clamped at 0) is a few 10-ms clock ticks and came out 0.0 once in
    # CI on a busy host; over the five arrivals it cannot.
    total = ledger_rows(home, "SELECT SUM(cpu_seconds), COUNT(*) FROM energy "
                              "WHERE phase='service'")[0]
    assert total[1] == 5 and total[0] > 0
    session = ledger_rows(home, "SELECT cpu_seconds, wall_seconds, batches, batch_cpu_seconds,"
                                " stopped_at FROM service_sessions")
    assert len(session) == 1
    whole_cpu, whole_wall, n, arrivals_cpu, stopped_at = session[0]
    assert n == 5 and stopped_at is not None and whole_wall > 0
    assert whole_cpu >= arrivals_cpu > 0  # idle = the rest, never negative

    status = subprocess.run(greenloop("status", "--config", str(config), "--home", str(home)),
                            env=env, capture_output=True, text=True, timeout=120)
    assert "service: 1 session(s)" in status.stdout and "Wh per hour" in status.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("greenloop-elec2")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if "served session" in (r.info.run_name or "")]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["service.arrivals"] == 5
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(nested) == 5
    batch5 = next(r for r in nested if r.data.tags.get("batch_seq") == "5")
    assert batch5.data.metrics["cpu_seconds.service"] == pytest.approx(cpu_s, rel=1e-6)


def test_a_separate_task_worker_processes_the_arrivals(tmp_path: Path) -> None:
    """Several machines: `serve --no-worker` keeps the server, deployments and watcher;
    `greenloop worker` processes (here a second process with the same project home and
    PREFECT_API_URL; on another machine, a shared filesystem) run the arrivals warm."""
    home = project_home(tmp_path)
    config = home / "configs" / "elec2.yaml"
    batches = stream_files(home, config)
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    serve = Proc(greenloop("serve", "--config", str(config), "--home", str(home), "--port",
                           str(port), "--no-worker"), tmp_path / "serve.log", service_env(home))
    worker = None
    try:
        wait_until(lambda: http_ok(f"{base}/health"), 180, "Prefect server", procs=(serve,))
        login(base, home)  # the server serve started wants its auth string and CSRF tokens
        worker = Proc(greenloop("worker", "--config", str(config), "--home", str(home)),
                      tmp_path / "worker.log", service_env(home, PREFECT_API_URL=base))
        for b in batches[:5]:
            drop(b, home / "data" / "landing" / "elec2")
        wait_until(lambda: processed(home, 5), 300, "5 batches", procs=(serve, worker))
        wait_until(lambda: completed_arrivals(base, 5), 60, "5 completed arrival task runs",
                   procs=(serve, worker))
        assert "Received task run" in worker.log.read_text()  # the worker ran them
        assert "Received task run" not in serve.log.read_text()
    finally:
        serve.stop()
        if worker is not None:
            worker.stop()
