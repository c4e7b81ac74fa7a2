"""The cheaper child lookup CodeCarbon's process mode is given: the same set as psutil's."""

from __future__ import annotations

import os
import subprocess
import time

import psutil

from greenloop import proctree
from greenloop.config import EnergyConfig
from greenloop.energy import tracker


def _tree() -> subprocess.Popen[bytes]:
    """A child with two grandchildren."""
    return subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])


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


def test_one_listing_walks_once_inside_and_afresh_outside(monkeypatch) -> None:
    walks: list[int] = []
    real = proctree._walk

    def counting(pid: int) -> list[int] | None:
        walks.append(pid)
        return real(pid)

    monkeypatch.setattr(proctree, "_walk", counting)
    me = os.getpid()
    with proctree.one_listing():
        first = proctree.descendants(me)
        child = subprocess.Popen(["sleep", "30"])
        try:
            assert proctree.descendants(me) == first  # the stop's CPU and RAM: one tree
            assert len(walks) == 1
        finally:
            child.kill()
            child.wait()
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in (proctree.descendants(me) or [])  # outside: walked again
        assert len(walks) == 2
    finally:
        child.kill()
        child.wait()


def test_metered_phase_stops_with_one_walk(monkeypatch) -> None:
    """CodeCarbon reads the tree for CPU and for RAM when a phase stops: one walk serves
    both (and one at the start), not three per phase."""
    from greenloop.energy import Meter

    meter = Meter(EnergyConfig())
    with meter.phase("warm"):
        pass
    walks: list[int] = []
    real = proctree._walk
    monkeypatch.setattr(proctree, "_walk", lambda pid: walks.append(pid) or real(pid))
    with meter.phase("x"):
        pass
    assert 1 <= len(walks) <= 2
