"""What the Prefect server spends on greenloop's per-batch bookkeeping, in CPU-seconds of
the server process: per task run (an arrival is one) and per take-and-release of a
model's update slot (tasks/slot.py), measured with psutil on a temporary server that
this script starts with `serve`'s settings (greenloop_cli.servers).

    .venv/bin/python benchmarks/prefect_server_cost.py [--runs 100]
    PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=1 \\
        .venv/bin/python benchmarks/prefect_server_cost.py      # Prefect's default recorder

The server's CPU is read after a settle of a few seconds, so work it does later (a
batched write, an event flush) is counted. Run it alone on the machine: the figures are
CPU time, but a loaded machine stretches everything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from greenloop_cli.main import QUIET_ENV  # noqa: E402
from greenloop_cli.servers import IDLE_TRIM, RECORDER_BATCHING  # noqa: E402

SETTLE_SECONDS = 4.0  # longer than the recorder's flush interval and a log batch


def server_cpu_seconds() -> float:
    """CPU-s of this process's children: the temporary Prefect server and its workers."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def measure(runs: int) -> dict[str, float]:
    from prefect import flow, get_client, task
    from prefect.cache_policies import NONE
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from tasks.slot import held

    @task(cache_policy=NONE)
    def one(i: int) -> int:
        return i

    @flow(name="prefect-server-cost")
    def go() -> dict[str, float]:
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name="bench-slot", limit=1))
        one(0)
        with held("bench-slot"):
            pass
        time.sleep(SETTLE_SECONDS)  # the warm-up's writes done

        def take_and_release(_: int) -> None:
            with held("bench-slot"):
                pass

        out: dict[str, float] = {}
        for name, call in (("task_run", one), ("update_slot", take_and_release)):
            server0, client0 = server_cpu_seconds(), time.process_time()
            for i in range(runs):
                call(i)
            client_s = time.process_time() - client0
            time.sleep(SETTLE_SECONDS)
            out[f"{name}_server_cpu_ms"] = (server_cpu_seconds() - server0) / runs * 1e3
            out[f"{name}_client_cpu_ms"] = client_s / runs * 1e3
        return out

    return go()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="prefect-cost-")
    for key, value in {**QUIET_ENV, **IDLE_TRIM, **RECORDER_BATCHING, "PREFECT_HOME": home,
                       "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
        os.environ.setdefault(key, value)
    os.environ.pop("PREFECT_API_URL", None)  # always a temporary server of our own
    result = {**measure(args.runs), "runs": args.runs,
              "recorder_batch_size": os.environ[
                  "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"],
              "load_average_1min": os.getloadavg()[0]}
    text = json.dumps({k: round(v, 2) if isinstance(v, float) else v
                       for k, v in result.items()}, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
