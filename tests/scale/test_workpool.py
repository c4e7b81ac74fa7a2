"""Work pool in place of `serve`: `greenloop deploy --pool` registers the deployments on a
Prefect process work pool, `prefect worker start` runs them, `greenloop watch` emits the
arrival events. Four batches dropped into data/landing/ bootstrap the first model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.services import (
    BIN,
    Proc,
    api,
    drop,
    flow_runs,
    free_port,
    greenloop,
    http_ok,
    ledger_rows,
    project_home,
    service_env,
    stream_files,
    wait_until,
)

pytestmark = [pytest.mark.scale, pytest.mark.slow]
POOL = "greenloop-test"


def test_process_work_pool_with_prefect_worker(tmp_path: Path) -> None:
    home = project_home(tmp_path)
    config = home / "configs" / "elec2.yaml"
    batches = stream_files(home, config)
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    env = service_env(home, PREFECT_API_URL=base, PREFECT_UI_API_URL=base,
                      PREFECT_SERVER_API_PORT=str(port))
    procs: list[Proc] = []
    t0 = time.monotonic()
    try:
        procs.append(Proc([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                           "--port", str(port)], tmp_path / "server.log", env))
        wait_until(lambda: http_ok(f"{base}/health"), 120, "Prefect server", procs=tuple(procs))
        import subprocess

        out = subprocess.run(greenloop("deploy", "--config", str(config), "--home", str(home),
                                       "--pool", POOL), env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        assert "deployed update/update-elec2 -> pool greenloop-test" in out.stdout
        pools = {p["name"]: p["type"] for p in api(base, "/work_pools/filter", {})}
        assert pools[POOL] == "process"
        deps = [d for d in api(base, "/deployments/filter", {}) if d["work_pool_name"] == POOL]
        assert len(deps) == 4
        procs.append(Proc([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type",
                           "process", "--name", "test-worker"], tmp_path / "worker.log", env))
        procs.append(Proc(greenloop("watch", "--config", str(config), "--home", str(home),
                                    "--poll-seconds", "0.5"), tmp_path / "watch.log", env))
        ready_s = time.monotonic() - t0

        t_drop = time.monotonic()
        for b in batches[:4]:
            drop(b, home / "data" / "landing" / "elec2")
        wait_until(lambda: ledger_rows(home, "SELECT 1 FROM versions WHERE model='elec2-gated'"),
                   300, "the bootstrap model", procs=tuple(procs))
        bootstrap_s = time.monotonic() - t_drop

        def all_final() -> list[dict]:
            runs = flow_runs(base, ["ingest-elec2", "update-elec2"])
            done = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
            return runs if len(done) == len(runs) and runs else []

        runs = wait_until(all_final, 120, "all runs final", procs=tuple(procs))
        assert all(r["state_type"] == "COMPLETED" for r in runs), [
            (r["name"], r["deployment_name"], r["state_type"]) for r in runs]
        assert sum(r["deployment_name"] == "ingest-elec2" for r in runs) == 4
        assert all(r["work_pool_name"] == POOL for r in runs)  # run by the worker
        processed = ledger_rows(home, "SELECT seq, decision FROM batches WHERE "
                                      "model='elec2-gated' ORDER BY seq")
        assert processed == [(1, "skip"), (2, "skip"), (3, "skip"), (4, "retrain")]
        assert "test-worker" in (tmp_path / "worker.log").read_text()
        print(f"timings: server+deploy+worker ready {ready_s:.1f} s; 4 batches dropped -> "
              f"bootstrap model {bootstrap_s:.1f} s")
    finally:
        for p in reversed(procs):
            p.stop()
