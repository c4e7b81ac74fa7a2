"""Prefect tasks whose arguments Prefect does not walk.

Before a task runs, Prefect visits every argument recursively (dataclasses, pydantic
models, lists, dicts) looking for futures to wait on and inputs to link. Our tasks take
the `Runtime` (which caches every batch's frame and every loaded model) and the batch's
`Work` (with its whole history), so that walk grew with the stream: on a 50-batch replay
it was the largest single part of the per-batch orchestration cost (profiled with
cProfile, issue 3; ~0.3 s a call on a long history against ~0.003 s quoted). These tasks
are always called with values, never futures, so marking every argument `opaque` loses no
dependency and keeps the task run, its state and its logs in the Prefect UI.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import task
from prefect.cache_policies import NONE
from prefect.context import TaskRunContext
from prefect.utilities.annotations import opaque

P = ParamSpec("P")
R = TypeVar("R")


def quoted_task(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`@task(name=..., cache_policy=NONE)`, called with every argument wrapped in
    `opaque`. The undecorated function stays reachable as `.fn`, like a Prefect task."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        prefect_task = task(name=name, cache_policy=NONE)(fn)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if TaskRunContext.get() is not None:
                # Inside a task run already (a served `arrival`): a nested task run would
                # add two API round trips and ~10 ms of CPU per call, per batch, for a
                # run the UI shows inside the arrival's own, whose logs carry the same.
                return fn(*args, **kwargs)
            return prefect_task(*(opaque(a) for a in args),
                                **{k: opaque(v) for k, v in kwargs.items()})

        call.fn = fn  # type: ignore[attr-defined]
        return call

    return decorate
