"""Deployment runs stay in the project they were registered for.

A deployment's `home` and `config` are fixed parameters, but whoever may start a run
through the Prefect API can override them. A run of a served or pooled deployment
therefore works only on the registered home, and only with a config from that home's
`configs/` or the code checkout's `configs/`. The registered home is the one `greenloop
serve` put in its environment ($GREENLOOP_SERVED_HOME, inherited by the flow-run
processes of its runner), else the deployment's own registered parameters (work-pool
workers, `greenloop deploy`). A flow called outside any deployment (the CLI, tests) is
the caller's own choice and is not checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from greenloop.workspace import Workspace

SERVED_HOME_ENV = "GREENLOOP_SERVED_HOME"
CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding flows/ and configs/


class OutsideServedHome(ValueError):
    """A deployment run's `home` or `config` parameter points outside its project."""


def confine(config: str, home: str | None) -> None:
    """Refuse a `home` other than the registered one and a `config` outside the allowed
    `configs/` folders; a no-op outside deployment runs."""
    registered = registered_home()
    if registered is None:
        return
    chosen = Workspace.from_env(home).home
    if chosen != registered:
        raise OutsideServedHome(f"parameter home={home!r} is not the project home this "
                                f"deployment was registered with ({registered})")
    allowed = (registered / "configs", CODE_ROOT / "configs")
    resolved = Path(config).resolve()  # symbolic links and `..` resolved first
    if not any(resolved.is_relative_to(folder) for folder in allowed):
        raise OutsideServedHome(f"parameter config={config!r} is outside "
                                f"{allowed[0]} and {allowed[1]}")


def registered_home() -> Path | None:
    served = os.environ.get(SERVED_HOME_ENV)
    if served:
        return Path(served).resolve()
    return _deployment_home()


def _deployment_home() -> Path | None:
    """The `home` the running deployment was registered with, read from the server
    (the run's own parameters are what a caller may have overridden)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    deployment_id = getattr(getattr(ctx, "flow_run", None), "deployment_id", None)
    if deployment_id is None:
        return None
    from prefect import get_client

    with get_client(sync_client=True) as client:
        parameters = client.read_deployment(deployment_id).parameters or {}
    return Workspace.from_env(parameters.get("home")).home
