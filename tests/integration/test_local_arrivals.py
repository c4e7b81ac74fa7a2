"""`serve`'s own arrivals: handed to one thread that calls the `arrival` task directly, a
task run each on a real Prefect API; a failing arrival is reported and the next one runs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

from flows import warm
from greenloop.data import write_stream
from tasks.runtime import get_runtime
from tests.conftest import drifting_stream, write_project

pytestmark = pytest.mark.integration


def _wait(check: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s")
        time.sleep(0.2)


def _arrival_runs() -> dict[str, str]:
    """Task run name -> state type, for the `arrival-*` runs the server has recorded."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="arrival-")))
    return {r.name: r.state_type.value if r.state_type else "" for r in runs}


def test_arrivals_run_in_this_process_as_task_runs(prefect_harness, home: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_project(home, drifting_stream(), overrides={"drift": {"report": "never"}})
    rt = get_runtime(str(config), None, str(home))
    landing = rt.ws.landing("synth")
    landing.mkdir(parents=True)
    cut = write_stream(rt.source, rt.cfg.data, home / "cut")
    errors: list[BaseException] = []
    monkeypatch.setattr(warm, "_LOCAL", None)  # this test's thread only
    monkeypatch.setattr(warm, "_METER", None)
    done: list[str] = []
    warm.start_local(on_error=errors.append, on_done=done.append)

    # An arrival that raises in its task (here: its config is gone) is reported, not fatal.
    warm.submit(landing / "elsewhere.csv", str(home / "configs" / "gone.yaml"), None, str(home))
    files = [landing / p.name for p in cut[:3]]
    for path, source in zip(files, cut[:3], strict=True):
        shutil.copyfile(source, path)
        warm.submit(path, str(config), None, str(home))

    _wait(lambda: len(rt.ledger.batches(rt.model_name, ("processed",))) == 3)
    assert len(errors) == 1 and "config file not found" in str(errors[0])
    _wait(lambda: len(done) == 3, 30)  # each arrival that returned, once
    assert sorted(done) == sorted(str(p) for p in files)
    names = {f"arrival-{p.stem}" for p in files} | {"arrival-elsewhere"}
    final = {"COMPLETED", "FAILED", "CRASHED"}
    # Recorded by the server from the runs' events: a moment after they end.
    _wait(lambda: all(_arrival_runs().get(n) in final for n in names), 60)
    runs = _arrival_runs()
    assert {runs[f"arrival-{p.stem}"] for p in files} == {"COMPLETED"}
    assert runs["arrival-elsewhere"] == "FAILED"
