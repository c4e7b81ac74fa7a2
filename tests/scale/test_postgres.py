"""MLflow tracking server on a PostgreSQL backend store, with greenloop pointed at it.

A real PostgreSQL from Debian's `postgresql` package is started by
scripts/start_postgres.sh in a temporary folder; `mlflow server` uses it as its backend
store and serves artifacts itself; greenloop runs `run` (bootstrap) and then `ingest`
(one `update`) with MLFLOW_TRACKING_URI=http://127.0.0.1:<port>.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.services import (
    BIN,
    REPO,
    Proc,
    free_port,
    greenloop,
    http_ok,
    project_home,
    require,
    service_env,
    stream_files,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "start_postgres.sh"


def _require_postgres() -> None:
    missing = []
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        missing.append("Debian postgresql (apt-get install -y postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        missing.append("psycopg2 (pip install -e '.[scale]')")
    require(missing, "PostgreSQL test", "GREENLOOP_REQUIRE_POSTGRES", "make test-postgres")


@pytest.fixture
def postgres(tmp_path: Path):  # noqa: ANN201 - yields the SQLAlchemy URI
    _require_postgres()
    # Not under pytest's tmp_path: that is private to root, and as root the server runs as
    # the `postgres` user, which must reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="greenloop-pg-"))
    data, port = root / "data", free_port()
    if os.geteuid() == 0:
        os.chown(root, *_postgres_ids())
    env = {**os.environ, "PG_FSYNC_OFF": "1"}
    out = subprocess.run(["bash", str(SCRIPT), "start", str(data), str(port)], env=env,
                         capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, out.stderr
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(data)], timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def test_update_against_an_mlflow_server_on_postgresql(tmp_path: Path, postgres: str) -> None:
    import psycopg2
    from mlflow import MlflowClient

    assert postgres.startswith("postgresql+psycopg2://greenloop@127.0.0.1:")
    home = project_home(tmp_path)
    config = home / "configs" / "elec2.yaml"
    batches = stream_files(home, config)
    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    env = service_env(home, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    t0 = time.monotonic()
    server = Proc([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1", "--backend-store-uri", postgres,
                   "--artifacts-destination", (tmp_path / "artifacts").as_uri()],
                  tmp_path / "mlflow-server.log", env)
    try:
        wait_until(lambda: http_ok(f"{tracking}/health"), 180, "mlflow server on PostgreSQL",
                   procs=(server,))
        server_up_s = time.monotonic() - t0
        client_env = {**env, "MLFLOW_TRACKING_URI": tracking}
        t1 = time.monotonic()
        run = subprocess.run(greenloop("run", "--config", str(config), "--home", str(home),
                                       "--max-batches", "4"), env=client_env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        arrived = home / "data" / "landing" / "elec2" / batches[4].name
        arrived.parent.mkdir(parents=True)
        arrived.write_bytes(batches[4].read_bytes())
        upd = subprocess.run(greenloop("ingest", str(arrived), "--config", str(config),
                                       "--home", str(home)), env=client_env,
                             capture_output=True, text=True, timeout=600)
        assert upd.returncode == 0, upd.stdout[-3000:] + upd.stderr[-3000:]
        assert "batch 5:" in upd.stdout
        greenloop_s = time.monotonic() - t1

        client = MlflowClient(tracking_uri=tracking)
        exp = client.get_experiment_by_name("greenloop-elec2")
        assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
        every = client.search_runs([exp.experiment_id], max_results=100)
        parents = {r.data.tags.get("mlflow.parentRunId") for r in every}
        runs = [r for r in every if r.info.run_id not in parents]  # the batch runs
        assert len(parents - {None}) == 1  # the bootstrap's replay run (ingest has none)
        assert sorted(r.info.run_name for r in runs) == [
            f"elec2-gated-b{i:05d}" for i in range(1, 6)]
        assert all("energy_kwh" in r.data.metrics for r in runs)
        champion = client.get_model_version_by_alias("elec2-gated", "champion")
        assert champion.tags["decision"] == "retrain" or champion.tags["parent_version"]
        # The artifacts went through the server, and the rows are in PostgreSQL.
        assert list((tmp_path / "artifacts").rglob("state_dict.pt"))
        dsn = postgres.replace("postgresql+psycopg2://", "postgresql://")
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s",
                        (int(exp.experiment_id),))
            assert cur.fetchone()[0] == 6  # 5 batch runs and the replay's parent run
            cur.execute("SELECT count(*) FROM model_versions WHERE name = 'elec2-gated'")
            assert cur.fetchone()[0] >= 1
            cur.execute("SELECT version FROM registered_model_aliases WHERE alias='champion'")
            assert cur.fetchone()[0] == int(champion.version)
        print(f"timings: mlflow server on PostgreSQL up {server_up_s:.1f} s; greenloop run "
              f"(4 batches) + ingest (1 update) {greenloop_s:.1f} s")
    finally:
        server.stop()


def test_a_batch_run_written_in_one_transaction_reads_back_on_postgresql(
        tmp_path: Path, postgres: str) -> None:
    """greenloop pointed straight at PostgreSQL (no tracking server): the per-batch run is
    written in one transaction there too, and reads back as the client's run does; the
    champion alias, read in one SELECT, answers as the client does."""
    from tests.integration.test_mlflow_onewrite import (
        check_alias_read_matches_the_client,
        check_one_write_matches_the_client,
    )

    check_one_write_matches_the_client(postgres, tmp_path / "artifacts")
    check_alias_read_matches_the_client(postgres, tmp_path / "artifacts")
