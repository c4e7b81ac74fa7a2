"""The fault-injection hook itself: rules, kill, fail, nth hit, probabilities."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from greenloop import faults


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_hits", {})


def test_unset_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    for point in faults.POINTS:
        faults.checkpoint(point)


def test_fail_raises_only_at_its_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "train:fail")
    faults.checkpoint("observe")
    with pytest.raises(faults.InjectedFault, match="train"):
        faults.checkpoint("train")


def test_nth_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "register:fail@2")
    faults.checkpoint("register")
    with pytest.raises(faults.InjectedFault):
        faults.checkpoint("register")
    faults.checkpoint("register")


def test_random_probabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "random:0.0,random:1.0:fail")
    with pytest.raises(faults.InjectedFault):
        faults.checkpoint("drift")
    monkeypatch.setenv(faults.ENV, "random:0.25:fail")
    fired = 0
    for _ in range(2000):
        try:
            faults.checkpoint("observe")
        except faults.InjectedFault:
            fired += 1
    assert 350 < fired < 650


@pytest.mark.parametrize("spec", ["nowhere:kill", "train:explode", "random"])
def test_bad_rules_are_errors(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv(faults.ENV, spec)
    with pytest.raises(ValueError):
        faults.checkpoint("train")


def test_kill_is_sigkill() -> None:
    code = "from greenloop.faults import checkpoint; checkpoint('alias'); print('survived')"
    env = {"GREENLOOP_FAULTS": "alias:kill", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL and "survived" not in done.stdout
