"""A process's descendants without reading every process on the machine.

CodeCarbon's process mode asks psutil for `children(recursive=True)` three times per
metered phase (CPU at start and stop, RAM at stop), and psutil answers by reading
`/proc/<pid>/stat` of every process on the host: ~1 ms each on an idle machine, more on
a busy one, and most of a skip's metering. Linux lists each thread's children in
`/proc/<pid>/task/<tid>/children`, so the same set costs one read per thread of the
tree. Where that file does not exist (kernel without CONFIG_PROC_CHILDREN, not Linux),
psutil's own walk is used. The answer is the same set; only its cost changes. A walk is
reused until a process or thread is born (`descendants`). The tracked process's own CPU
times come from `getrusage` rather than /proc/self/stat: the same kernel counters.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import deque
from typing import Any, NamedTuple

import psutil


def direct_children(pid: int) -> list[int] | None:
    """Pids of `pid`'s children, or None when the kernel does not list them."""
    task = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task)
    except OSError:
        return None
    pids: list[int] = []
    for tid in tids:
        try:
            data = _read(f"{task}/{tid}/children")
        except FileNotFoundError:
            if os.path.isdir(f"{task}/{tid}"):
                return None  # the file itself is missing: not supported here
            continue  # the thread ended meanwhile
        except OSError:
            continue
        pids.extend(int(p) for p in data.split())
    return pids


def _read(path: str) -> bytes:
    """A small /proc file without a buffered file object: ~3 µs instead of ~8 µs, and a
    serving process has ~40 threads to read, three times per metered phase."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)  # a thread's children list: a few pids
    finally:
        os.close(fd)


# A listing stays valid while no process or thread has been born on the machine: every
# birth takes a new PID, and /proc/loadavg names the last one the kernel gave out. An
# exit only removes a member, which the callers skip (NoSuchProcess). The age bound
# keeps a PID counter that wrapped around to the same value from passing for "no birth".
MAX_AGE_SECONDS = 10.0
_lock = threading.Lock()
_listings: dict[int, tuple[bytes, float, list[int] | None]] = {}
# psutil.Process objects of listed pids: creating one reads /proc/<pid>/stat. A pid can
# name another process only after a birth, and a birth re-walks, which empties this.
_processes: dict[int, psutil.Process] = {}


def last_pid() -> bytes | None:
    """The most recently allocated PID (5th field of /proc/loadavg), or None."""
    try:
        return _read("/proc/loadavg").split()[4]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int] | None:
    """Every descendant of `pid` (breadth first), or None when not supported. Walked
    afresh only when a process or thread was born since the last walk: CodeCarbon reads
    the tree at both ends of every metered phase (three times, with RAM), and a walk
    reads one file per thread of the tree (~50 with a Prefect server as a child), each
    read a chance for another thread to take the GIL."""
    stamp, now = last_pid(), time.monotonic()
    with _lock:
        held = _listings.get(pid)
    if held is not None and stamp is not None and held[0] == stamp \
            and now - held[1] < MAX_AGE_SECONDS:
        return held[2]
    found = _walk(pid)  # the stamp was read before: a birth during the walk re-walks next time
    with _lock:
        _processes.clear()
        if stamp is not None:
            _listings[pid] = (stamp, now, found)
    return found


def _process(pid: int) -> psutil.Process:
    with _lock:
        proc = _processes.get(pid)
    if proc is None:
        proc = psutil.Process(pid)  # NoSuchProcess when it ended since the listing
        with _lock:
            _processes[pid] = proc
    return proc


def _walk(pid: int) -> list[int] | None:
    found: list[int] = []
    seen = {pid}
    queue = deque([pid])
    while queue:
        kids = direct_children(queue.popleft())
        if kids is None:
            return None
        fresh = [k for k in kids if k not in seen]
        seen.update(fresh)
        found.extend(fresh)
        queue.extend(fresh)
    return found


class OwnCpuTimes(NamedTuple):
    """What `psutil.Process.cpu_times()` answers for this process, but for iowait."""

    user: float
    system: float
    children_user: float
    children_system: float


class Process(psutil.Process):
    """psutil.Process whose `children` reads the per-thread lists when it can, and
    whose `cpu_times` for the calling process itself asks the kernel directly."""

    def cpu_times(self) -> Any:  # noqa: ANN401 - psutil's namedtuple, or OwnCpuTimes
        """For this process: `getrusage`, the same counters the kernel writes into
        /proc/self/stat (both sum every thread, the ended ones too), in microseconds
        instead of clock ticks. CodeCarbon reads the tracked process's CPU times at
        both ends of every metered phase: parsing /proc/self/stat cost ~30 µs a read
        against ~2 µs (measured 7 Dec, 12 threads)."""
        if self.pid != os.getpid():  # another process, or this object survived a fork
            return super().cpu_times()
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return OwnCpuTimes(own.ru_utime, own.ru_stime, kids.ru_utime, kids.ru_stime)

    def children(self, recursive: bool = False) -> list[psutil.Process]:
        if not recursive:
            pids = direct_children(self.pid)
            if pids is None:
                return super().children()
            return _alive(pids, psutil.Process)
        pids = descendants(self.pid)
        if pids is None:
            return super().children(recursive=True)
        return _alive(pids, _process)


def _alive(pids: list[int], make: Any) -> list[psutil.Process]:
    out = []
    for p in pids:
        try:
            out.append(make(p))
        except psutil.NoSuchProcess:  # ended between the listing and now
            continue
    return out


def speed_up(tracker: Any) -> bool:
    """Give a CodeCarbon tracker's CPU and RAM meters the cheaper child lookup.
    True when both were found (CodeCarbon 3.3's attribute names); otherwise the
    tracker is left as it was and still measures the same thing, slower."""
    ready = getattr(tracker, "_ensure_hardware_ready", None)
    if ready is None:
        return False
    ready()
    patched = 0
    for hw in getattr(tracker, "_hardware", []):
        proc = getattr(hw, "_process", None)
        if isinstance(proc, psutil.Process) and not isinstance(proc, Process):
            hw._process = Process(proc.pid)
            patched += 1
        if hasattr(hw, "_get_children_memories") and hasattr(hw, "_pid"):
            hw._get_children_memories = _children_rss(hw._pid)
            patched += 1
    return patched >= 2


def _children_rss(pid: int) -> Any:
    """CodeCarbon's RAM meter asks for the tracked process's children at the end of
    every phase, making a psutil.Process of the tracked pid each time (a read of its
    /proc stat file for its start time): one object serves the process's life."""
    tracked = Process(pid)

    def rss() -> list[int]:
        out = []
        for child in tracked.children(recursive=True):
            try:
                out.append(child.memory_info().rss)
            except psutil.NoSuchProcess:
                continue
        return out

    return rss
