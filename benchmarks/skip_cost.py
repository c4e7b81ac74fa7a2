"""Per-batch cost of a skip, warm: ingest + drift + evaluate + register on ~300 rows.

Whole pipeline (default): builds a throwaway project home with the Elec2 source (weekly
batches of 336 rows), bootstraps the `never` policy (which skips every batch after the
bootstrap), warms the process up on a few batches, then times `update` flow runs one
batch each, exactly as `greenloop run` calls them (Prefect flow run, ledger, DVC, MLflow
run, CodeCarbon).

    .venv/bin/python benchmarks/skip_cost.py [--batches 20] [--warm 3] [--profile out.prof]

`--served` times what `greenloop serve` runs per dropped file instead: one `arrival` task
run per batch in this warm process (no flow run per batch). `--synthetic 200x500` (with
or without `--core`) uses a seeded SEA-like stream with a data-only config:

    .venv/bin/python benchmarks/skip_cost.py --served --synthetic 300x8
    .venv/bin/python benchmarks/skip_cost.py --served --synthetic 200x500

`--history 20000` first appends 20,000 processed batches to the ledger (after the
warm-up): what each skip costs once a model has been served for years.

Beside the skips' CPU-s, a fixed piece of work (`reference_work`) is timed before each
timed arrival: this host's speed moves by tens of percent from minute to minute, and the
ratio says whether the code or the host changed between two runs.

Core parts only (`--core`): the pure-core work of a skip, each part timed on its own
with time.perf_counter, in process, no flows: validation of the batch as read, observe
(the champion's predictions, score and per-row losses on it) and drift against the reference window
(its concatenation included, as the step does). On the config's source, or on a seeded
SEA-like stream (3 SEA features + uniform noise columns, concept switches) of any width:

    .venv/bin/python benchmarks/skip_cost.py --core --synthetic 300x8
    .venv/bin/python benchmarks/skip_cost.py --core --synthetic 200x500
    .venv/bin/python benchmarks/skip_cost.py --core --config configs/elec2.yaml
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
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from greenloop.config import GreenloopConfig
from greenloop.ledger import Ledger
from greenloop_cli.main import QUIET_ENV
from greenloop_cli.servers import IDLE_TRIM, RECORDER_BATCHING
from tasks.frames import FRAMES

# The CLI's quiet settings; the temporary Prefect server this benchmark starts runs with
# `serve`'s settings.
for _k, _v in {**QUIET_ENV, **IDLE_TRIM, **RECORDER_BATCHING,
               "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


PROFILE: cProfile.Profile | None = None


def timed_skips(config: str, paths: list[str], home: str) -> tuple[list[float], list[float]]:
    """The body of a parent flow: one `update` subflow run per batch, timed one by one."""
    from flows.update import update

    def one(path: str) -> list[dict]:
        return update(config, path=path, policy="never", home=home)

    return _timed(one, paths)


def timed_arrivals(config: str, paths: list[str], home: str) -> tuple[list[float], list[float]]:
    """What `greenloop serve` runs per dropped file: one `arrival` task run each, in
    this warm process (serve's arrival thread makes the same call; the hand-over and the
    Prefect server's share are metered by benchmarks/served.py)."""
    import asyncio

    from flows.deploy import ensure_limit, limit_name
    from flows.warm import local_arrival, warm_client
    from tasks.runtime import get_runtime

    # `greenloop serve` creates the model's update slot before it serves: each arrival
    # then acquires and releases it on the Prefect server (two requests), as timed here.
    asyncio.run(ensure_limit(limit_name(get_runtime(config, "never", home).model_name)))
    with warm_client():  # as the arrival thread of `greenloop serve`
        def one(path: str) -> list[dict]:
            return local_arrival(path, config, "never", home, uuid.uuid4().hex)["results"]

        return _timed(one, paths)


# CPU-s of `reference_work`, run before each timed arrival in the same process.
REFERENCE_CPU: list[float] = []
_REFERENCE_FRAME = pd.DataFrame(np.arange(2400, dtype=float).reshape(300, 8))


def reference_work() -> float:
    """The same fixed work every time, of a skip's kind (Python calls, small pandas and
    numpy operations), timed in CPU-s beside each arrival. This host's speed varies from
    minute to minute (a pure-Python loop took 0.37 to 0.74 s across six runs, 7 Dec): a
    skip's CPU-s read beside this figure says whether the code or the host changed."""
    c0 = cpu_seconds()
    total = 0
    for i in range(50_000):
        total += i * i
    frame = _REFERENCE_FRAME
    for k in range(20):
        total += int(frame[frame[k % 8] > 1000.0].sum().sum())
    assert total > 0
    return cpu_seconds() - c0


def _timed(one: Callable[[str], list[dict]], paths: list[str]) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for path in paths:
        REFERENCE_CPU.append(reference_work())
        w0, c0 = time.perf_counter(), cpu_seconds()
        if PROFILE:
            PROFILE.enable()
        out = one(path)
        if PROFILE:
            PROFILE.disable()
        walls.append(time.perf_counter() - w0)
        cpus.append(cpu_seconds() - c0)
        assert [r["decision"] for r in out] in (["skip"], ["retrain"]), out
    return walls, cpus


def pad_history(ledger: Ledger, model: str, n: int) -> None:
    """`n` processed batches appended to the ledger after the warm-up, as if served before
    the timed ones: copies of the last one's row under new hashes (its file, its md5).
    The champion was trained before them, so its drift reference is unchanged; what
    grows is what every arrival reads or walks of its history."""
    last = ledger.batches(model, ("processed",))[-1]
    now = time.time()
    with ledger.transaction() as c:
        top = c.execute("SELECT MAX(seq) FROM batches WHERE model=?", (model,)).fetchone()[0]
        c.executemany(
            "INSERT INTO batches (model, hash, seq, source, accepted_path, rows, status, role,"
            " decision, dvc_md5, received_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(model, f"pad{k:061d}", top + 1 + k, "padding", last.accepted_path, last.rows,
              "processed", "update", "skip", last.dvc_md5, now, now) for k in range(n)])


def sea_like(rows_per_batch: int, n_features: int, n_batches: int, seed: int) -> pd.DataFrame:
    """SEA (Street & Kim 2001): label = x0 + x1 <= theta on three uniform(0, 10) features,
    theta switching every quarter of the stream, 10% label noise; the other features are
    uniform noise columns, so width costs without changing the concept."""
    rng = np.random.default_rng(seed)
    rows = rows_per_batch * n_batches
    x = rng.uniform(0.0, 10.0, size=(rows, max(n_features, 3)))
    theta = np.array([8.0, 9.0, 7.0, 9.5])[np.arange(rows) * 4 // rows]
    label = (x[:, 0] + x[:, 1] <= theta) ^ (rng.random(rows) < 0.1)
    frame = pd.DataFrame(x, columns=[f"f{i:03d}" for i in range(x.shape[1])])
    frame["y"] = np.where(label, "pos", "neg")
    return frame


def _median_ms(samples: list[float]) -> float:
    return round(1000 * statistics.median(samples), 2)


def core_parts(cfg: GreenloopConfig, source: pd.DataFrame, repeats: int,
               warm: int) -> dict[str, object]:
    """Median seconds of each pure-core part of a skip over `repeats` warm batches."""
    from greenloop.config import RecipeConfig
    from greenloop.data import infer_schema, split_stream, validate_batch
    from greenloop.drift import detect
    from greenloop.steps import concat, observe
    from greenloop.train import retrain

    schema = infer_schema(source, cfg.data)
    raw = list(split_stream(source, cfg.data))
    n_ref = cfg.drift.reference_batches
    assert len(raw) >= n_ref + warm + repeats, f"stream too short: {len(raw)} batches"
    window = [validate_batch(b, schema, cfg.data) for b in raw[:n_ref]]
    # The champion's weights do not change what a prediction costs: one cheap epoch.
    champion = retrain(concat(window), schema, cfg.data.task, cfg.model,
                       RecipeConfig(epochs=1), cfg.model.seed)
    parts: dict[str, list[float]] = {"validate": [], "observe": [], "drift": [], "total": []}
    for i, batch in enumerate(raw[n_ref: n_ref + warm + repeats]):
        t0 = time.perf_counter()
        frame = validate_batch(batch, schema, cfg.data)
        t1 = time.perf_counter()
        observe(champion, frame, schema.target)
        t2 = time.perf_counter()
        detect(concat(window), frame, schema, cfg.drift)
        t3 = time.perf_counter()
        window = window[1:] + [frame]
        if i >= warm:
            for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                parts[name].append(dt)
    return {
        "rows_per_batch": round(statistics.fmean(len(b) for b in raw)),
        "features": len(schema.features), "reference_batches": n_ref,
        "drift_method": cfg.drift.method, "timed_batches": repeats, "warm_batches": warm,
        **{f"{name}_ms_median": _median_ms(v) for name, v in parts.items()},
        "total_ms_max": round(1000 * max(parts["total"]), 2),
        "nproc": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
    }


def synthetic_home(home: Path, shape: str, batches: int, seed: int) -> str:
    """The seeded SEA-like stream as a CSV in `home` and a data-only config for it;
    returns the config's path. Enough batches for the bootstrap, warm-up and timing."""
    from greenloop.config import DataConfig

    rows, width = (int(v) for v in shape.lower().split("x"))
    n_batches = DataConfig.model_fields["bootstrap_batches"].default + batches + 1
    (home / "data" / "sources").mkdir(parents=True)
    (home / "configs").mkdir()
    sea_like(rows, width, n_batches, seed).to_csv(home / "data/sources/sea.csv", index=False)
    config = home / "configs" / "sea-wide.yaml"
    config.write_text(f"name: sea-{rows}x{width}\ndata:\n  path: data/sources/sea.csv\n"
                      f"  target: y\n  task: classification\n  batch_rows: {rows}\n")
    return str(config)


def run_core(args: argparse.Namespace) -> None:
    import torch

    from greenloop.config import DataConfig, load_config
    from greenloop.data import read_table

    torch.set_num_threads(1)  # as the pipeline runs it on two shared cores
    if args.synthetic:
        rows, width = (int(v) for v in args.synthetic.lower().split("x"))
        n_batches = 8 + args.warm + args.batches
        source = sea_like(rows, width, n_batches, args.seed)
        data = DataConfig(path=Path("sea.csv"), target="y", task="classification",
                          batch_rows=rows)
        cfg = GreenloopConfig(name="sea-wide", data=data)  # data-only: every default
        label = f"synthetic SEA-like {rows}x{width}, seed {args.seed}"
    else:
        cfg = load_config(args.config)
        source = read_table(REPO / cfg.data.path)
        label = args.config
    result = core_parts(cfg, source, args.batches, args.warm)
    print(json.dumps({"stream": label, **result}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "configs" / "elec2.yaml"))
    ap.add_argument("--batches", type=int, default=20, help="timed skips")
    ap.add_argument("--warm", type=int, default=3, help="untimed skips after the bootstrap")
    ap.add_argument("--profile", default=None, help="write cProfile stats of the timed part")
    ap.add_argument("--keep", action="store_true", help="keep the throwaway home")
    ap.add_argument("--core", action="store_true",
                    help="time the pure-core parts of a skip (validate, observe, drift) only")
    ap.add_argument("--synthetic", default=None, metavar="ROWSxFEATURES",
                    help="a seeded SEA-like stream, e.g. 200x500, with a data-only config")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream")
    ap.add_argument("--history", type=int, default=0, metavar="N",
                    help="before the timed skips, N more processed batches in the ledger, "
                         "as a model served for months has")
    ap.add_argument("--served", action="store_true",
                    help="time the served path (one `arrival` task run per batch, as "
                         "`greenloop serve`) instead of one `update` flow run per batch")
    args = ap.parse_args()
    if args.core:
        run_core(args)
        return

    from prefect import flow  # noqa: TID251 - a benchmark of the flows

    from flows import call_flow
    from greenloop.config import load_config
    from tasks.runtime import get_runtime
    from tasks.stream import prepare_stream

    global PROFILE
    parent = flow(name="skip-cost")(timed_skips)
    home = Path(tempfile.mkdtemp(prefix="greenloop-skip-"))
    if args.synthetic:  # a data-only config, as a new user writes it
        args.config = synthetic_home(home, args.synthetic, args.warm + args.batches, args.seed)
    cfg = load_config(args.config)
    if not args.synthetic:
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
        if args.history:
            pad_history(rt.ledger, rt.model_name, args.history)
        PROFILE = cProfile.Profile() if args.profile else None
        timed = [str(p) for p in files[first: first + args.batches]]
        if args.served:
            walls, cpus = timed_arrivals(args.config, timed, str(home))
        else:
            walls, cpus = call_flow(parent, args.config, timed, str(home))
        phases = rt.ledger.energy_by_phase(rt.model_name)
        rows = statistics.fmean(b.rows or 0 for b in rt.ledger.batches(rt.model_name)[first:])
        result = {
            "path": "served arrival task" if args.served else "update flow run per batch",
            "config": args.config, "rows_per_batch": rows, "timed_batches": len(walls),
            "wall_seconds_median": statistics.median(walls),
            "wall_seconds_mean": statistics.fmean(walls),
            "wall_seconds_p90": sorted(walls)[int(0.9 * (len(walls) - 1))],
            "cpu_seconds_median": statistics.median(cpus),
            "cpu_seconds_mean": statistics.fmean(cpus),
            "reference_work_cpu_seconds_median": statistics.median(REFERENCE_CPU),
            "cpu_seconds_median_in_reference_works": (statistics.median(cpus)
                                                      / statistics.median(REFERENCE_CPU)),
            "metered_phases_all_batches": {p: {k: round(v, 4) for k, v in d.items()
                                               if k != "emissions_kg"} for p, d in phases.items()},
            # Memory at the end: the process, and the batches' frames it holds (within
            # GREENLOOP_FRAME_CACHE_MB, tasks/frames.py).
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "frames_held_mb": round(FRAMES.nbytes / 2**20, 1), "frames_held": len(FRAMES),
            "frames_read": FRAMES.loads,
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
