"""The service meter's process tree: every process counted once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from greenloop.service import ProcessTree


def test_a_child_named_as_a_root_too_is_counted_once() -> None:
    """`serve` bills its own tree and the Prefect server it started, which is also its
    child: naming both must not count the server twice."""
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nt=time.process_time()\n"
                             "while time.process_time()-t<0.4: pass\ntime.sleep(30)"])
    try:
        time.sleep(1.5)  # its busy loop is over: its CPU time no longer moves
        alone = ProcessTree([busy.pid]).cpu_seconds()
        parent_only = ProcessTree([os.getpid()])
        both = ProcessTree([os.getpid(), busy.pid])
        a, b = parent_only.cpu_seconds(), both.cpu_seconds()
        assert alone >= 0.3
        assert abs(b - a) < 0.1  # not a + alone: the child is in the parent's tree already
    finally:
        busy.kill()
        busy.wait()
