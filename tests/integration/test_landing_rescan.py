"""An arrival whose report was lost (the watcher marked it reported, then crashed; an
event lost in an outage) is found by the rescan: every landing file ends with a ledger or
a quarantine row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from greenloop.data import write_stream
from tasks.landing import rescan, unaccounted
from tasks.runtime import get_runtime
from tests.conftest import drifting_stream, write_project

pytestmark = pytest.mark.integration


def test_rescan_ingests_unreported_files_and_quarantines_broken_ones(prefect_harness,
                                                                     home: Path) -> None:
    config = write_project(home, drifting_stream())
    rt = get_runtime(str(config), None, str(home))
    landing = rt.ws.landing("synth")
    landing.mkdir(parents=True)
    files = []
    for path in write_stream(rt.source, rt.cfg.data, home / "cut")[:2]:
        files.append(landing / path.name)
        shutil.copyfile(path, files[-1])
    (landing / "broken.csv").write_text("x0,x1\n1,2\n")  # required columns missing
    (landing / "export.xlsx").write_bytes(b"PK\x03\x04")  # a format ingest does not read
    (landing / ".still-writing.csv.part").write_text("x0\n")  # not complete: left alone

    assert unaccounted(rt, [*files, landing / "broken.csv"]) == {
        "batch-00001.csv", "batch-00002.csv", "broken.csv"}
    found = rescan(rt)

    assert sorted(found) == ["batch-00001.csv", "batch-00002.csv", "broken.csv",
                             "export.xlsx"]
    assert unaccounted(rt, files) == set()  # both in the ledger now
    assert [b.seq for b in rt.ledger.batches(rt.model_name)] == [1, 2]
    assert rt.ledger.quarantine_count("synth") == 2  # each with its reason
    assert not (landing / "broken.csv").exists() and not (landing / "export.xlsx").exists()
    assert (landing / ".still-writing.csv.part").exists()
    assert rescan(rt) == []  # nothing left unaccounted: a second rescan does nothing
