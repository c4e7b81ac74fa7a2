"""Data versioning with DVC's Python API (in-process: ~15 ms per file, not ~0.7 s per CLI call)."""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import yaml

from greenloop.faults import checkpoint
from tasks import dvcyaml

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# DVC's "To track the changes with git, run: ..." hints are noise in a pipeline log.
logging.getLogger("dvc").setLevel(logging.WARNING)

_LOCK = threading.Lock()  # DVC allows one command per repository at a time


@contextmanager
def _repo_lock(home: Path) -> Iterator[None]:
    """Serialize DVC writes across threads and processes (serve, watch, fleet)."""
    lock_path = home / ".dvc" / "tmp" / "greenloop.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK, lock_path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_repo(home: Path) -> None:
    if (home / ".dvc").is_dir():
        return
    from dvc.repo import Repo

    # Several ingests may meet an uninitialized home at once (fleet threads, served runs):
    # one initializes, the others wait and find it done. The lock is on the home folder
    # itself, since .dvc/ does not exist yet.
    fd = os.open(home, os.O_RDONLY)
    try:
        with _LOCK:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if (home / ".dvc").is_dir():
                return
            Repo.init(str(home), no_scm=not (home / ".git").exists())
            repo = Repo(str(home))
            with repo.config.edit() as conf:
                conf["core"]["analytics"] = False
                conf["core"]["check_update"] = False
    finally:
        os.close(fd)  # releases the flock


_REPOS: dict[Path, object] = {}


def _repo(home: Path):  # noqa: ANN202 - dvc.repo.Repo, imported lazily
    from dvc.repo import Repo

    if home not in _REPOS:
        repo = Repo(str(home))  # opening a Repo costs ~0.1 s: once per process
        _keep_state_open(repo)
        _REPOS[home] = repo
    return _REPOS[home]


def _keep_state_open(repo) -> None:  # noqa: ANN001 - dvc.repo.Repo
    """DVC closes its state databases whenever it releases the repository lock, and
    opens them again at the next add. Kept open, the one of file hashes (SQLite in WAL
    mode, made to be shared by processes) is opened once per process: ~1.5 ms less per
    add (6.7-7.2 -> 5.2-5.5 ms over 60 adds)."""
    state = repo.state
    close = state.close
    state.close = lambda: None  # what lock_repo and Repo._reset call
    atexit.register(close)


def _config_stamp(home: Path) -> tuple[int, ...]:
    """When DVC's config files last changed (0 for one that does not exist)."""
    stamps = []
    for name in ("config", "config.local"):
        try:
            stamps.append((home / ".dvc" / name).stat().st_mtime_ns)
        except FileNotFoundError:
            stamps.append(0)
    return tuple(stamps)


_CONFIGS: dict[Path, tuple[tuple[int, ...], object]] = {}


@contextmanager
def _kept_while_unchanged(repo, attr: str, store: dict, key: object,  # noqa: ANN001
                          stamp: tuple[int, ...]) -> Iterator[None]:
    """DVC drops `repo.<attr>` (a cached property) whenever it takes the repository lock.
    While the files it was read from keep their `stamp`, the one of the last add is
    handed back; after a change, DVC reads them again."""
    held = store.get(key)
    if held is not None and held[0] == stamp:
        repo.__dict__[attr] = held[1]  # where DVC's cached_property keeps it
    yield
    value = repo.__dict__.get(attr)
    if value is not None:
        store[key] = (stamp, value)


def _parsed_config(home: Path, repo) -> AbstractContextManager[None]:  # noqa: ANN001
    """Parsing and validating DVC's config again cost ~1.7 ms of every add: kept while
    .dvc/config and config.local are unchanged (an edit is read at the next add)."""
    return _kept_while_unchanged(repo, "config", _CONFIGS, home, _config_stamp(home))


def _ignore_stamp(home: Path, folder: Path) -> tuple[int, ...]:
    """When each .dvcignore from the repository's root down to `folder` last changed (0
    for one that does not exist): the files DVC reads to decide whether an output there
    is ignored."""
    stamps = []
    inside = folder.relative_to(home)
    for d in [inside, *inside.parents]:
        try:
            stamps.append((home / d / ".dvcignore").stat().st_mtime_ns)
        except FileNotFoundError:
            stamps.append(0)
    return tuple(stamps)


_IGNORES: dict[tuple[Path, Path], tuple[tuple[int, ...], object]] = {}


def _kept_ignores(home: Path, repo, folder: Path) -> AbstractContextManager[None]:  # noqa: ANN001
    """DVC's .dvcignore filter, built again, lists every directory from the root down to
    the output's (to find sub-repositories), and a batch folder grows by two files a
    batch: an add cost 6.7 ms beside 5 files and 10.7 ms beside 4000 (measured). Kept
    while no .dvcignore on the way to `folder` changes. A sub-repository created inside
    the data folders of a running service is not seen until it restarts."""
    return _kept_while_unchanged(repo, "dvcignore", _IGNORES, (home, folder),
                                 _ignore_stamp(home, folder))


def _recorded_md5(dvcfile: Path) -> str | None:
    try:
        outs = dvcyaml.load(dvcfile.read_text()).get("outs") or []
        return str(outs[0]["md5"]) if len(outs) == 1 else None
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return None


def dvc_add(home: Path, path: Path) -> str:
    """Track `path` with DVC; returns the md5 DVC recorded for it (`hashlib.md5` of its bytes).

    `repo.add` re-reads every .dvc file in the project to check for overlapping outputs
    (~0.4 s per call at 60 tracked batches, growing with each one). Accepted batches are
    content-addressed files in a folder only this function writes, so we version the
    single file directly (same .dvc file, same cache, same hash database), and skip DVC
    altogether when the file is already tracked with the same md5 (a replay of the same
    stream under another policy)."""
    data = path.read_bytes()
    md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - DVC's content hash
    dvcfile = path.with_name(path.name + ".dvc")
    if _recorded_md5(dvcfile) == md5:
        return md5
    from dvc.repo import lock_repo

    with _repo_lock(home):
        repo = _repo(home)
        try:
            with (lock_repo(repo), _parsed_config(home, repo),
                  _kept_ignores(home, repo, path.parent)):
                if _plain_new_file(repo, path, dvcfile):
                    _add_file(repo, path, md5, len(data), dvcfile)
                    recorded = md5
                else:
                    recorded = _add_stage(repo, path, dvcfile)
        finally:
            repo._reset()  # drop DVC's cached index: it no longer lists every output
        checkpoint("dvc")  # DVC has written its cache and .dvc file; the ledger not yet
        if recorded != md5:  # pragma: no cover - DVC's md5 is the md5 of the bytes
            raise RuntimeError(f"DVC recorded {recorded} for {path.name}, expected {md5}")
        return recorded


def _plain_new_file(repo, path: Path, dvcfile: Path) -> bool:  # noqa: ANN001 - dvc Repo
    """A new, non-executable data file in a repository without Git: what every accepted
    batch is. Anything else (Git's .gitignore to edit, a .dvc file to merge into, an
    `isexec` to record, a stage file as the output) takes DVC's stage path."""
    from dvc.dvcfile import is_valid_filename
    from dvc.scm import NoSCM

    return (isinstance(repo.scm, NoSCM) and not dvcfile.exists()
            and not is_valid_filename(str(path)) and not path.stat().st_mode & 0o111)


def _add_file(repo, path: Path, md5: str, size: int,  # noqa: ANN001 - dvc Repo
              dvcfile: Path) -> None:
    """What `stage.add_outs(relink=False)` and `stage.dump()` do for such a file, through
    DVC's own data layer: refused if .dvcignore ignores it, copied into the cache with the
    cache's link types and protected, its hash recorded in DVC's database of file hashes
    (so `dvc status` does not hash it again), and its .dvc file written. The stage
    machinery around them (a stage object, its read-write lock, progress bars, schema
    validation) was 2.3 of 4.2 ms of CPU an add (benchmarks/dvc_add_cost.py, 7 Dec)."""
    from dvc.output import OutputIsIgnoredError
    from dvc_data.hashfile.hash_info import HashInfo

    target = str(path)
    if repo.dvcignore.is_ignored(repo.fs, target, ignore_subrepos=False):
        check = repo.dvcignore.check_ignore(target)
        if check.match:
            raise OutputIsIgnoredError(check)
    repo.cache.local.add(target, repo.fs, md5)
    repo.state.save(target, repo.fs, HashInfo("md5", md5))
    dvcyaml.write_stage_file(dvcfile, {"outs": [
        {"md5": md5, "size": size, "hash": "md5", "path": path.name}]})


def _add_stage(repo, path: Path, dvcfile: Path) -> str:  # noqa: ANN001 - dvc Repo
    """The single-file stage, created and written by DVC's stage machinery."""
    with repo.scm_context(), dvcyaml.fast_stage_files():
        stage = repo.stage.create(single_stage=True, validate=False, fname=str(dvcfile),
                                  wdir=str(path.parent), outs=[path.name])
        # Hash, save to the cache, .gitignore entry; as `dvc add --no-relink`: the file
        # is left as written instead of checked out again from the cache copy of the
        # same bytes (~5 ms of a ~11 ms add).
        stage.add_outs(None, relink=False)
        stage.dump()
    return str(stage.outs[0].hash_info.value)
