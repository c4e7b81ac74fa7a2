"""Landing watcher: only complete files, each once, temp names ignored until renamed."""

from __future__ import annotations

import os
from pathlib import Path

from greenloop.watch import LandingWatcher, is_candidate


def test_candidates_skip_hidden_and_temporary_names_only(tmp_path: Path) -> None:
    # A file in a format ingest cannot read is reported too: refused with its reason.
    for name in ("batch-1.csv", "b.parquet", "b.csv.gz", "b.tsv", "export.xlsx"):
        assert is_candidate(tmp_path / name), name
    for name in (".batch.csv", "batch.csv.tmp", "batch.csv.part", "b.crdownload"):
        assert not is_candidate(tmp_path / name), name


def test_a_file_is_reported_after_two_equal_polls_and_only_once(tmp_path: Path) -> None:
    w = LandingWatcher(tmp_path)
    f = tmp_path / "batch-1.csv"
    f.write_text("a,b\n1,2\n")
    assert w.poll() == []  # first sight: maybe still being written
    assert w.poll() == [f]
    assert w.poll() == []  # once


def test_a_growing_file_waits_until_its_size_is_stable(tmp_path: Path) -> None:
    w = LandingWatcher(tmp_path)
    f = tmp_path / "batch-1.csv"
    f.write_text("a,b\n")
    w.poll()
    with f.open("a") as out:
        out.write("1,2\n")  # the writer is still appending
    assert w.poll() == []
    assert w.poll() == [f]


def test_an_empty_file_is_not_complete(tmp_path: Path) -> None:
    w = LandingWatcher(tmp_path)
    (tmp_path / "batch-1.csv").touch()
    assert w.poll() == [] and w.poll() == []


def test_temp_name_then_rename_is_picked_up_after_the_rename(tmp_path: Path) -> None:
    w = LandingWatcher(tmp_path)
    tmp = tmp_path / "batch-1.csv.part"
    tmp.write_text("a,b\n1,2\n")
    assert w.poll() == [] and w.poll() == []
    final = tmp_path / "batch-1.csv"
    os.replace(tmp, final)
    w.poll()
    assert w.poll() == [final]


def test_state_file_survives_a_restart_but_new_content_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "state" / "watch.json"
    landing = tmp_path / "landing"
    landing.mkdir()
    f = landing / "batch-1.csv"
    f.write_text("a,b\n1,2\n")
    first = LandingWatcher(landing, state)
    first.poll()
    assert first.poll() == [f]
    again = LandingWatcher(landing, state)  # a restarted watcher
    again.poll()
    assert again.poll() == []
    f.write_text("a,b\n1,2\n3,4\n")  # rewritten with new content
    again.poll()
    assert again.poll() == [f]


def test_files_are_reported_in_modification_order(tmp_path: Path) -> None:
    w = LandingWatcher(tmp_path)
    for i, name in enumerate(["c.csv", "a.csv", "b.csv"]):
        p = tmp_path / name
        p.write_text("x\n1\n")
        os.utime(p, ns=(1_000_000_000 * (i + 1),) * 2)
    w.poll()
    assert [p.name for p in w.poll()] == ["c.csv", "a.csv", "b.csv"]


def test_missing_folder_is_not_an_error(tmp_path: Path) -> None:
    assert LandingWatcher(tmp_path / "nope").poll() == []
