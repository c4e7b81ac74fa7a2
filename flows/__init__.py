"""Prefect flows: the order of steps and nothing else."""

from __future__ import annotations

from typing import Any

from tasks.loopback import local_events_plain

# Before any Prefect events client connects: events to a Prefect server on this machine
# are sent without websocket compression (tasks/loopback.py).
local_events_plain()


def call_flow(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a flow with the per-run heartbeat off (it costs ~1 s a flow run)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return fn(*args, **kwargs)
