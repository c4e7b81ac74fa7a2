"""Task arguments are passed through untouched and are not walked by Prefect."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prefect import flow, task
from prefect.cache_policies import NONE

from tasks.quoted import quoted_task


class CountingList(list):
    """Counts how often something iterates over it (Prefect's walk does)."""

    iterations = 0

    def __iter__(self):  # noqa: ANN204 - list's own signature
        CountingList.iterations += 1
        return super().__iter__()


@dataclass
class Record:
    history: CountingList = field(default_factory=lambda: CountingList(range(5)))


def _size(record: Record, extra: int = 0) -> int:
    return len(record.history) + extra


quoted_size = quoted_task("size")(_size)
plain_size = task(name="size", cache_policy=NONE)(_size)


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(("call", "walked"), [(quoted_size, False), (plain_size, True)])
def test_prefect_walks_plain_task_arguments_but_not_quoted_ones(call, walked: bool) -> None:  # noqa: ANN001
    @flow
    def run() -> int:
        return call(Record(), extra=2)

    CountingList.iterations = 0
    assert run() == 7  # the value arrives unwrapped, keyword arguments too
    assert (CountingList.iterations > 0) is walked


def test_the_plain_function_stays_reachable() -> None:
    assert quoted_size.fn(Record()) == 5


@pytest.mark.usefixtures("prefect_harness")
def test_inside_a_task_run_a_quoted_task_runs_inline_but_in_a_flow_it_is_a_task_run() -> None:
    from prefect.context import TaskRunContext

    def whose_run(_record: Record) -> str | None:
        ctx = TaskRunContext.get()
        return str(ctx.task_run.id) if ctx else None

    quoted_whose = quoted_task("whose")(whose_run)

    @task(cache_policy=NONE)
    def outer() -> tuple[str, str | None]:
        ctx = TaskRunContext.get()
        assert ctx is not None
        return str(ctx.task_run.id), quoted_whose(Record())

    @flow
    def in_a_flow() -> str | None:
        return quoted_whose(Record())

    outer_id, inner_id = outer()
    assert inner_id == outer_id  # no nested task run: the arrival's own run carries it
    assert in_a_flow() is not None  # a task run of its own inside a flow
