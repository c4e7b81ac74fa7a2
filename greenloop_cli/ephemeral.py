"""Prefect's temporary API server, tied to the life of the command that needs it.

With no PREFECT_API_URL, the first Prefect client of `greenloop run`, `compare`, `ingest`
or `bootstrap` starts a temporary server (a uvicorn child process) and stops it at exit.
A command killed by SIGKILL (out of memory, a CI timeout, `kill -9`) never reaches its
exit, so the server kept running: a port held and ~2% of a core spent idle, for nobody.
Started here instead, from the main thread and before any flow, the child gets SIGTERM
from the kernel when this process dies (the same parent-death signal `serve` gives its
servers). Prefect keeps one temporary server per process and finds this one running.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any
from unittest import mock

from greenloop_cli.servers import dies_with


def start_tied_ephemeral_server() -> bool:
    """Start Prefect's temporary server now, tied to this process; False when there is
    nothing to do (an API URL is set, the server is already up, not the main thread, or
    not Linux)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    hook = dies_with(os.getpid())
    if (PREFECT_API_URL.value() or hook is None or None in SubprocessASGIServer._instances
            or threading.current_thread() is not threading.main_thread()):
        return False

    class TiedServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            real = subprocess.Popen

            def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
                kwargs.setdefault("preexec_fn", hook)
                return real(*args, **kwargs)

            # Only this call's Popen: the main thread, before any flow has started threads.
            with mock.patch.object(subprocess, "Popen", popen):
                return super()._run_uvicorn_command()

    TiedServer().start()  # registered as Prefect's portless instance: get_client reuses it
    return True
