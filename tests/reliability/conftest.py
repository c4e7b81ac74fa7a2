"""Fixtures for the reliability tests: a synthetic project whose policy fine-tunes on
every batch (so every crash point is reached), batch files dropped in data/landing/,
and helpers to run `greenloop` in-process (CliRunner) or as a child process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import make_frame, write_project

ROOT = Path(__file__).resolve().parents[2]
BATCH_ROWS = 100
NAME = "rel"
MODEL = f"{NAME}-finetune"


@dataclass
class Project:
    home: Path
    config: Path

    @property
    def landing(self) -> Path:
        return self.home / "data" / "landing" / NAME

    def batch(self, i: int, seed: int = 0) -> pd.DataFrame:
        """Batch i of a seeded stream (different content for every i)."""
        return make_frame(BATCH_ROWS, seed=1000 * seed + i)

    def drop(self, frame: pd.DataFrame, name: str) -> Path:
        """A batch file arriving in data/landing/ (written atomically, like a mover would)."""
        self.landing.mkdir(parents=True, exist_ok=True)
        path = self.landing / name
        tmp = path.with_name(f".{name}.part")
        if name.endswith(".parquet"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        tmp.replace(path)
        return path

    def runtime(self):  # noqa: ANN201 - tasks.runtime.Runtime
        from tasks.runtime import get_runtime

        return get_runtime(str(self.config), None, str(self.home))

    def ledger(self):  # noqa: ANN201 - a fresh greenloop.ledger.Ledger
        from greenloop.ledger import Ledger

        return Ledger(self.home / "state" / "ledger.sqlite")

    def cli(self, *args: str) -> tuple[int, str]:
        """`greenloop <args> --config ... --home ...` in this process; (exit code, output)."""
        from greenloop_cli.main import app

        # DVC binds a log handler to the sys.stdout of the moment; CliRunner closes the
        # stream it lent after each call, so the next `dvc init` would fail to log.
        logging.getLogger("dvc").handlers.clear()
        result = CliRunner().invoke(app, [*args, "--config", str(self.config),
                                          "--home", str(self.home)])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    def spawn(self, *args: str, faults: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`greenloop <args>` as a child process (for SIGKILL and real parallelism)."""
        full_env = {**os.environ, **(env or {})}
        full_env.pop("GREENLOOP_FAULTS", None)
        if faults:
            full_env["GREENLOOP_FAULTS"] = faults
        full_env.setdefault("PREFECT_API_URL", prefect_api_url())
        cmd = [sys.executable, "-m", "greenloop_cli", *args, "--config", str(self.config),
               "--home", str(self.home)]
        return subprocess.Popen(cmd, cwd=self.home, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)


def prefect_api_url() -> str:
    """The API of the session's Prefect test harness, for child processes."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or ""


def new_project(root: Path, **overrides: object) -> Project:
    source = pd.concat([make_frame(BATCH_ROWS, seed=i) for i in range(4)], ignore_index=True)
    cfg = {"data": {"bootstrap_batches": 2, "max_batch_rows": 1000},
           "policy": {"name": "finetune"}, **overrides}
    config = write_project(root, source, name=NAME, batch_rows=BATCH_ROWS, overrides=cfg)
    return Project(root, config)


def bootstrap(p: Project, batches: int = 3) -> None:
    """Arrive and process the first batches: a champion exists afterwards."""
    for i in range(batches):
        code, out = p.cli("ingest", str(p.drop(p.batch(i), f"boot-{i:03d}.csv")))
        assert code == 0, out
    assert p.ledger().champion(MODEL) is not None


@pytest.fixture
def project(tmp_path: Path, prefect_harness: None) -> Iterator[Project]:
    from tasks.runtime import forget_runtimes

    yield new_project(tmp_path)
    forget_runtimes()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[Project]:
    """One bootstrapped project shared by a module's tests (they leave it consistent)."""
    from tasks.runtime import forget_runtimes

    p = new_project(tmp_path_factory.mktemp("served"))
    bootstrap(p)
    yield p
    forget_runtimes()
