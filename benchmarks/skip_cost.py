"""Per-batch cost of a skip, warm: ingest + drift + evaluate + register on ~300 rows.

Builds a throwaway project home with the Elec2 source (weekly batches of 336 rows),
bootstraps the `never` policy (which skips every batch after the bootstrap), warms the
process up on a few batches, then times `update` flow runs one batch each, exactly as
`greenloop run` calls them (Prefect flow run, ledger, DVC, MLflow run, CodeCarbon).

    .venv/bin/python benchmarks/skip_cost.py [--batches 20] [--warm 3] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

for _k, _v in {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true", "CODECARBON_LOG_LEVEL": "error",
               "DVC_NO_ANALYTICS": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
               "GIT_PYTHON_REFRESH": "quiet",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


PROFILE: cProfile.Profile | None = None


def timed_skips(config: str, paths: list[str], home: str) -> tuple[list[float], list[float]]:
    """The body of a parent flow: one `update` subflow run per batch, timed one by one."""
    from flows.update import update

    walls, cpus = [], []
    for path in paths:
        w0, c0 = time.perf_counter(), cpu_seconds()
        if PROFILE:
            PROFILE.enable()
        out = update(config, path=path, policy="never", home=home)
        if PROFILE:
            PROFILE.disable()
        walls.append(time.perf_counter() - w0)
        cpus.append(cpu_seconds() - c0)
        assert [r["decision"] for r in out] in (["skip"], ["retrain"]), out
    return walls, cpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "configs" / "elec2.yaml"))
    ap.add_argument("--batches", type=int, default=20, help="timed skips")
    ap.add_argument("--warm", type=int, default=3, help="untimed skips after the bootstrap")
    ap.add_argument("--profile", default=None, help="write cProfile stats of the timed part")
    ap.add_argument("--keep", action="store_true", help="keep the throwaway home")
    args = ap.parse_args()

    from prefect import flow  # noqa: TID251 - a benchmark of the flows

    from flows import call_flow
    from greenloop.config import load_config
    from tasks.runtime import get_runtime
    from tasks.stream import prepare_stream

    global PROFILE
    parent = flow(name="skip-cost")(timed_skips)
    cfg = load_config(args.config)
    home = Path(tempfile.mkdtemp(prefix="greenloop-skip-"))
    source = REPO / cfg.data.path
    (home / source.parent.relative_to(REPO)).mkdir(parents=True)
    shutil.copy(source, home / cfg.data.path)
    try:
        rt = get_runtime(args.config, "never", str(home))
        files = prepare_stream(rt)
        first = cfg.data.bootstrap_batches + args.warm
        assert len(files) >= first + args.batches, "stream too short"
        # bootstrap + warm-up (imports, first MLflow run, DVC repo), then the timed skips,
        # each an `update` subflow run of one parent flow run, as `greenloop run` does.
        call_flow(parent, args.config, [str(p) for p in files[:first]], str(home))
        PROFILE = cProfile.Profile() if args.profile else None
        timed = files[first: first + args.batches]
        walls, cpus = call_flow(parent, args.config, [str(p) for p in timed], str(home))
        phases = rt.ledger.energy_by_phase(rt.model_name)
        rows = statistics.fmean(b.rows or 0 for b in rt.ledger.batches(rt.model_name)[first:])
        result = {
            "config": args.config, "rows_per_batch": rows, "timed_batches": len(walls),
            "wall_seconds_median": statistics.median(walls),
            "wall_seconds_mean": statistics.fmean(walls),
            "wall_seconds_p90": sorted(walls)[int(0.9 * (len(walls) - 1))],
            "cpu_seconds_median": statistics.median(cpus),
            "cpu_seconds_mean": statistics.fmean(cpus),
            "metered_phases_all_batches": {p: {k: round(v, 4) for k, v in d.items()
                                               if k != "emissions_kg"} for p, d in phases.items()},
            "nproc": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        }
        print(json.dumps(result, indent=1))
        if PROFILE:
            PROFILE.dump_stats(args.profile)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
