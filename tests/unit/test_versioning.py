"""dvc_add with real DVC: what it records, and a config edit taking effect at once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from tasks import versioning


def _file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(os.urandom(2048))
    return path


def _cached(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def test_add_records_the_md5_and_fills_the_cache(tmp_path: Path) -> None:
    versioning.ensure_repo(tmp_path)
    path = _file(tmp_path / "data", "a.parquet")
    md5 = versioning.dvc_add(tmp_path, path)
    assert md5 == hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324
    outs = yaml.safe_load(path.with_name("a.parquet.dvc").read_text())["outs"]
    assert outs[0]["md5"] == md5 and outs[0]["path"] == "a.parquet"
    assert _cached(tmp_path / ".dvc" / "cache", md5).read_bytes() == path.read_bytes()


def test_an_edited_dvc_config_is_read_at_the_next_add(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On DVC's stage path (a Git repository, an existing .dvc file), the parsed config is
    reused between adds (parsing it cost ~1.7 ms each), but not once .dvc/config has
    changed: the next add reads the edit, as before."""
    monkeypatch.setattr(versioning, "_plain_new_file", lambda *_args: False)
    versioning.ensure_repo(tmp_path)
    data = tmp_path / "data"
    versioning.dvc_add(tmp_path, _file(data, "a.parquet"))
    parsed = versioning._CONFIGS[tmp_path][1]
    versioning.dvc_add(tmp_path, _file(data, "b.parquet"))
    assert versioning._CONFIGS[tmp_path][1] is parsed  # reused, not parsed again
    config = tmp_path / ".dvc" / "config"
    config.write_text(config.read_text().replace("[core]\n", "[core]\n    autostage = true\n"))
    os.utime(config, ns=(1, 1))  # a new stamp even within the file system's mtime grain
    versioning.dvc_add(tmp_path, _file(data, "c.parquet"))
    again = versioning._CONFIGS[tmp_path][1]
    assert again is not parsed
    assert again["core"]["autostage"] is True


def test_dvc_hash_state_stays_open_between_adds_and_records_each_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DVC's database of file hashes is opened once per process, not once per add; what
    it records is what another DVC process reads. An add does not relink the file (as
    `dvc add --no-relink`), so the database of checked-out links is not opened at all."""
    import sqlite3

    from dvc.repo import Repo

    versioning.ensure_repo(tmp_path)
    data = tmp_path / "data"
    versioning.dvc_add(tmp_path, _file(data, "a.parquet"))
    opened: list[str] = []
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(str(a[0])) or
                        connect(*a, **k))
    paths = [_file(data, f"{name}.parquet") for name in "bcd"]
    md5s = [versioning.dvc_add(tmp_path, p) for p in paths]
    assert [p for p in opened if "hashes" in p or "links" in p] == []
    monkeypatch.undo()
    other = Repo(str(tmp_path))  # as `dvc status` in another process would open it
    try:
        for path, md5 in zip(paths, md5s, strict=True):
            _meta, hash_info = other.state.get(str(path), other.fs)
            assert hash_info is not None and hash_info.value == md5
    finally:
        other.close()


def test_the_dvc_cli_sees_added_files_as_tracked_and_restores_them(tmp_path: Path) -> None:
    """What `dvc_add` leaves is what `dvc add` leaves: the real CLI finds nothing to
    report, and checks a deleted file out again from the cache, byte for byte."""
    import subprocess
    import sys

    versioning.ensure_repo(tmp_path)
    paths = [_file(tmp_path / "data" / "accepted", f"{n}.parquet") for n in "ab"]
    for path in paths:
        versioning.dvc_add(tmp_path, path)
    dvc = [sys.executable, "-m", "dvc"]
    status = subprocess.run([*dvc, "status", "--json"], cwd=tmp_path, capture_output=True,
                            text=True, check=True)
    assert status.stdout.strip() in ("{}", "")
    content = paths[0].read_bytes()
    paths[0].unlink()
    gone = subprocess.run([*dvc, "status", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    assert "a.parquet" in gone.stdout  # the real CLI notices the deletion
    subprocess.run([*dvc, "checkout", str(paths[0].with_name("a.parquet.dvc"))],
                   cwd=tmp_path, capture_output=True, check=True)
    assert paths[0].read_bytes() == content


def test_dvcignore_filter_is_reused_until_a_dvcignore_changes(tmp_path: Path) -> None:
    """DVC's .dvcignore filter lists every folder down to the batch's to build: it is kept
    between adds to one folder, and built again once a .dvcignore on the way changes (an
    output it ignores is refused by DVC, as `dvc add` refuses it)."""
    from dvc.exceptions import DvcException

    versioning.ensure_repo(tmp_path)
    data = tmp_path / "data" / "accepted" / "m"
    versioning.dvc_add(tmp_path, _file(data, "a.parquet"))
    kept = versioning._IGNORES[(tmp_path, data)][1]
    versioning.dvc_add(tmp_path, _file(data, "b.parquet"))
    assert versioning._IGNORES[(tmp_path, data)][1] is kept  # not built again
    (tmp_path / "data" / ".dvcignore").write_text("*.parquet\n")
    with pytest.raises(DvcException, match="ignored"):
        versioning.dvc_add(tmp_path, _file(data, "c.parquet"))
    assert not (data / "c.parquet.dvc").exists()


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root`: its bytes and permission bits."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_batch_is_versioned_as_dvcs_stage_machinery_versions_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new batch file goes through DVC's data layer, not its stage objects: the same
    .dvc file byte for byte, the same protected file in the cache, the same entry in DVC's
    database of file hashes as DVC's stage path leaves for the same bytes."""
    from dvc.repo import Repo

    content = os.urandom(5000)
    homes = {"data layer": tmp_path / "a", "stage path": tmp_path / "b"}
    for how, home in homes.items():
        with monkeypatch.context() as m:
            if how == "stage path":
                m.setattr(versioning, "_plain_new_file", lambda *_args: False)
            home.mkdir()
            versioning.ensure_repo(home)
            path = home / "data" / "accepted" / "m" / "x.parquet"
            path.parent.mkdir(parents=True)
            path.write_bytes(content)
            assert versioning.dvc_add(home, path) == hashlib.md5(content).hexdigest()  # noqa: S324
    a, b = homes.values()
    dvcfile = Path("data/accepted/m/x.parquet.dvc")
    assert (a / dvcfile).read_text() == (b / dvcfile).read_text()
    assert _tree(a / ".dvc" / "cache") == _tree(b / ".dvc" / "cache")
    hashes = []
    for home in (a, b):
        repo = Repo(str(home))
        try:
            _meta, hash_info = repo.state.get(str(home / "data/accepted/m/x.parquet"), repo.fs)
            hashes.append(hash_info)
        finally:
            repo.close()
    assert hashes[0] is not None and hashes[0] == hashes[1]


def test_an_existing_or_executable_file_takes_dvcs_stage_path(tmp_path: Path) -> None:
    """Where the stage machinery does more than the data layer here does (merging into
    an existing .dvc file, recording `isexec`), the add is DVC's own."""
    versioning.ensure_repo(tmp_path)
    repo = versioning._repo(tmp_path)
    path = _file(tmp_path / "data", "a.parquet")
    dvcfile = path.with_name("a.parquet.dvc")
    assert versioning._plain_new_file(repo, path, dvcfile)
    path.chmod(0o755)
    assert not versioning._plain_new_file(repo, path, dvcfile)
    versioning.dvc_add(tmp_path, path)
    assert yaml.safe_load(dvcfile.read_text())["outs"][0].get("isexec") is True
    path.chmod(0o644)
    assert not versioning._plain_new_file(repo, path, dvcfile)  # its .dvc file exists
