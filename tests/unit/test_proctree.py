"""The cheaper child lookup CodeCarbon's process mode is given: the same set as psutil's."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from greenloop import proctree
from greenloop.config import EnergyConfig
from greenloop.energy import tracker

T = TypeVar("T")


def _tree() -> subprocess.Popen[bytes]:
    """A child with two grandchildren."""
    return subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])


def _with_no_birth(run: Callable[[], T]) -> T:
    """`run()`, repeated until no PID was allocated on the machine while it ran (a birth
    anywhere re-walks the tree, which is right, but not what these tests look at)."""
    for _ in range(20):
        stamp = proctree.last_pid()
        out = run()
        if proctree.last_pid() == stamp:
            return out
    raise AssertionError("a process or thread was born during every one of 20 tries")


def test_descendants_are_psutils_children() -> None:
    child = _tree()
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(child.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        expected = {p.pid for p in psutil.Process().children(recursive=True)}
        assert len(expected) >= 3  # sh and its two sleeps
        assert set(proctree.descendants(os.getpid()) or []) == expected
        fast = proctree.Process(os.getpid())
        assert {p.pid for p in fast.children(recursive=True)} == expected
        assert {p.pid for p in fast.children()} == {p.pid for p in psutil.Process().children()}
    finally:
        for p in psutil.Process(child.pid).children():
            p.kill()
        child.kill()
        child.wait()


def test_an_unknown_process_lists_no_children() -> None:
    assert proctree.direct_children(2**22 + 12345) is None


def test_codecarbon_trackers_get_the_cheaper_lookup() -> None:
    """Fails when a CodeCarbon upgrade renames what `speed_up` patches (the tracker would
    still measure, at the old cost: this test says so instead of a slow benchmark)."""
    t = tracker(EnergyConfig())  # greenloop's trackers come with it
    cpu = [hw for hw in t._hardware if hasattr(hw, "_process")]
    assert cpu and all(isinstance(hw._process, proctree.Process) for hw in cpu)


def test_a_listing_is_reused_until_a_birth_and_then_walked_afresh(monkeypatch) -> None:
    walks: list[int] = []
    real = proctree._walk
    monkeypatch.setattr(proctree, "_walk", lambda pid: walks.append(pid) or real(pid))
    monkeypatch.setattr(proctree, "_listings", {})
    me = os.getpid()
    def twice() -> tuple[list[int] | None, list[int] | None]:
        walks.clear()
        return proctree.descendants(me), proctree.descendants(me)

    first, second = _with_no_birth(twice)
    assert second == first and len(walks) == 1  # no birth: the same listing
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in (proctree.descendants(me) or [])  # a birth: walked again
        assert len(walks) >= 2
    finally:
        child.kill()
        child.wait()


def test_a_listing_older_than_the_bound_is_walked_again(monkeypatch) -> None:
    walks: list[int] = []
    real = proctree._walk
    monkeypatch.setattr(proctree, "_walk", lambda pid: walks.append(pid) or real(pid))
    monkeypatch.setattr(proctree, "_listings", {})
    monkeypatch.setattr(proctree, "MAX_AGE_SECONDS", 0.0)
    proctree.descendants(os.getpid())
    proctree.descendants(os.getpid())
    assert len(walks) == 2


def test_the_birth_stamp_is_the_last_pid_the_kernel_gave_out() -> None:
    before = int(proctree.last_pid() or 0)
    thread = threading.Thread(target=lambda: None)  # a thread takes a PID too
    thread.start()
    thread.join()
    assert int(proctree.last_pid() or 0) != before


def test_metered_phase_stops_with_one_walk(monkeypatch) -> None:
    """CodeCarbon reads the tree at the start and twice at the stop (CPU, RAM): with no
    birth in between, one walk serves all three."""
    from greenloop.energy import Meter

    meter = Meter(EnergyConfig())
    with meter.phase("warm"):
        pass
    walks: list[int] = []
    real = proctree._walk
    monkeypatch.setattr(proctree, "_walk", lambda pid: walks.append(pid) or real(pid))
    def one_phase() -> None:
        walks.clear()
        with meter.phase("x"):
            pass

    _with_no_birth(one_phase)
    assert len(walks) <= 1


def test_children_are_the_same_process_objects_until_a_birth() -> None:
    """A psutil.Process per child costs a /proc read: reused while no PID is allocated."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        me = proctree.Process(os.getpid())
        first, second = _with_no_birth(
            lambda: (me.children(recursive=True), me.children(recursive=True)))
        assert child.pid in [p.pid for p in first]
        assert [id(p) for p in first] == [id(p) for p in second]
    finally:
        child.kill()
        child.wait()
    # Dead but not yet re-walked (no birth since): skipped by who reads it, never wrong.
    for proc in me.children(recursive=True):
        if proc.pid == child.pid:
            assert not proc.is_running()


def test_own_cpu_times_are_the_kernels_as_psutil_reads_them() -> None:
    """getrusage and /proc/self/stat are the same counters: ours falls between two of
    psutil's reads, give or take a clock tick (psutil's unit) each side."""
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # some CPU time to compare
        pass
    ours = proctree.Process(os.getpid())
    before = psutil.Process().cpu_times()
    mine = ours.cpu_times()
    after = psutil.Process().cpu_times()
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    total = mine.user + mine.system
    assert before.user + before.system - 2 * tick <= total <= after.user + after.system + 2 * tick
    assert total > 0.3
    assert mine.children_user >= 0 and mine.children_system >= 0
    child = subprocess.Popen(["sleep", "30"])
    try:  # any other process: psutil's own answer (with iowait)
        assert hasattr(proctree.Process(child.pid).cpu_times(), "iowait")
    finally:
        child.kill()
        child.wait()


def test_ram_meter_reads_each_childs_rss_and_sees_a_child_born_later() -> None:
    """The RAM meter's children lookup keeps one Process of the tracked pid: a child
    started after its first call is still counted at the next."""
    t = tracker(EnergyConfig())
    ram = next(hw for hw in t._hardware if hasattr(hw, "_get_children_memories"))
    before = ram._get_children_memories()
    child = _tree()
    try:
        time.sleep(0.2)  # the shell has started its two sleeps
        after = ram._get_children_memories()
        expected = psutil.Process(os.getpid()).children(recursive=True)
        assert len(after) == len(expected) >= len(before) + 3
        assert all(rss > 0 for rss in after)
    finally:
        child.kill()
        child.wait()
