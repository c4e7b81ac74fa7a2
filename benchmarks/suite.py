"""The generality suite: does the default policy work, with only a data section, on
streams this project was never tuned on?

Each stream is written to CSV with a DATA-ONLY config (name + data), cut into batches
exactly as the pipeline cuts them, and replayed in memory through the one per-batch step
(`greenloop.simulate`) for the default policy (`gated`, calibrated), `periodic` (a full
retrain every batch on all history), `finetune` on every batch, and `naive` (the previous
batch's majority class or mean, no model). One table for all. Quality only: nothing here
measures energy.

Streams: river's offline drifting generators with a known change point (SEA, Hyperplane,
RandomRBFDrift, Agrawal and LED via drift, FriedmanDrift for regression), its bundled real
ones (Shuttle, ImageSegments, Bananas, TrumpApproval), a 500-feature SEA (+ noise columns),
one with 30% missing labels and a sparse categorical, and the three shared streams
(configs/elec2.yaml, weather.yaml, bikes.yaml with their data section only). Rows per
stream are capped (`--batches`), so the suite stays minutes on two cores.

    .venv/bin/python benchmarks/suite.py             # the full table (~15-25 min)
    .venv/bin/python benchmarks/suite.py --quick     # CI-sized: fewer streams and batches
    .venv/bin/python benchmarks/suite.py --only sea,led --set policy.promote_tolerance=0
    .venv/bin/python benchmarks/suite.py --schedules  # + the 16 schedules (~2x the time)

With `--schedules` the default is also judged as issue 10 judges it on the shared streams:
against the best of the 16 periodic schedules `compare` searches (every 1/2/4/8 batches ×
all history or the last 4/8/16), and against the cheapest of them within tolerance of its
quality, in training row-epochs (rows × epochs run: the training's work, deterministic;
not energy, which only `greenloop compare` measures).

Needs the `bench` extra (river): pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from greenloop.compare import best_quality, cheapest_within, naive_prequential, within_tolerance
from greenloop.config import GreenloopConfig, load_config
from greenloop.policy import periodic_variants
from greenloop.simulate import load_stream, simulate
from greenloop.step import StepInput, StepOutcome
from greenloop.steps import Batch
from greenloop.tune import screen_variants

SEED = 7
POLICIES = ("gated", "periodic", "finetune")
# Issue 11 "done when": default within 0.5 points of periodic on >= 80% of streams, within
# 2 points on every stream (MAE: +2% / +8%), and better than naive everywhere.
CLOSE_POINTS, FAR_POINTS = 0.5, 2.0
CLOSE_MAE, FAR_MAE = 0.02, 0.08


@dataclass(frozen=True)
class Stream:
    name: str
    task: str  # classification | regression
    batch_rows: int
    make: Callable[[int], pd.DataFrame]  # rows -> frame with a `y` column
    categorical: tuple[str, ...] = ()
    quick: bool = False  # part of --quick


def _river_frame(dataset: Any, rows: int) -> pd.DataFrame:
    records = []
    for x, y in itertools.islice(iter(dataset), rows):
        records.append({**{str(k): v for k, v in x.items()}, "y": y})
    frame = pd.DataFrame.from_records(records)
    if frame["y"].dtype == bool:
        frame["y"] = frame["y"].map({True: "yes", False: "no"})
    return frame


def _drift(first: Any, second: Any, rows: int) -> Any:
    """An abrupt change to `second` half way through the capped rows: a known change point."""
    from river.datasets import synth

    return synth.ConceptDriftStream(first, second, position=rows // 2, width=max(rows // 50, 1),
                                    seed=SEED)


def sea(rows: int) -> pd.DataFrame:
    from river.datasets import synth

    return _river_frame(_drift(synth.SEA(variant=0, noise=0.1, seed=SEED),
                               synth.SEA(variant=2, noise=0.1, seed=SEED), rows), rows)


def hyperplane(rows: int) -> pd.DataFrame:
    from river.datasets import synth

    return _river_frame(synth.Hyperplane(seed=SEED, n_features=10, n_drift_features=5,
                                         mag_change=0.01, noise_percentage=0.05), rows)


def rbf(rows: int) -> pd.DataFrame:
    from river.datasets import synth

    return _river_frame(synth.RandomRBFDrift(seed_model=SEED, seed_sample=SEED, n_classes=4,
                                             n_features=10, n_centroids=30, change_speed=0.001,
                                             n_drift_centroids=15), rows)


def agrawal(rows: int) -> pd.DataFrame:
    from river.datasets import synth

    return _river_frame(_drift(synth.Agrawal(classification_function=1, seed=SEED),
                               synth.Agrawal(classification_function=4, seed=SEED), rows), rows)


def led(rows: int) -> pd.DataFrame:
    from river.datasets import synth

    return _river_frame(_drift(synth.LEDDrift(seed=SEED, noise_percentage=0.1,
                                              irrelevant_features=True, n_drift_features=0),
                               synth.LEDDrift(seed=SEED + 1, noise_percentage=0.1,
                                              irrelevant_features=True, n_drift_features=7),
                               rows), rows)


def friedman(rows: int) -> pd.DataFrame:
    from river.datasets import synth

    third = rows // 3
    return _river_frame(synth.FriedmanDrift(drift_type="gra", position=(third, 2 * third),
                                            transition_window=max(rows // 20, 1), seed=SEED), rows)


def _bundled(name: str) -> Callable[[int], pd.DataFrame]:
    def make(rows: int) -> pd.DataFrame:
        from river import datasets

        return _river_frame(getattr(datasets, name)(), rows)
    return make


def stagger(rows: int) -> pd.DataFrame:
    """STAGGER: three categorical features (integer codes), the concept swapped at the
    middle: the features' distribution never moves, only the labels' rule does."""
    from river.datasets import synth

    return _river_frame(_drift(synth.STAGGER(classification_function=0, seed=SEED),
                               synth.STAGGER(classification_function=2, seed=SEED), rows), rows)


def mv(rows: int) -> pd.DataFrame:
    """Mv: regression on numeric and text features with dependencies between them."""
    from river.datasets import synth

    return _river_frame(synth.Mv(seed=SEED), rows)


def wide_sea(rows: int) -> pd.DataFrame:
    """SEA plus 497 pure-noise columns: 500 features, only three informative."""
    frame = sea(rows)
    rng = np.random.default_rng(SEED)
    noise = pd.DataFrame(rng.normal(size=(len(frame), 497)).astype(np.float32),
                         columns=[f"noise_{i:03d}" for i in range(497)])
    return pd.concat([noise, frame], axis=1)


def missing_labels(rows: int) -> pd.DataFrame:
    """Agrawal with 30% of its labels missing and a sparse categorical (85% empty)."""
    frame = agrawal(rows)
    rng = np.random.default_rng(SEED)
    frame["y"] = frame["y"].astype(object).where(rng.random(len(frame)) >= 0.3)
    levels = np.array([f"code_{i}" for i in range(12)], dtype=object)
    sparse = levels[rng.integers(len(levels), size=len(frame))]
    frame["referral"] = np.where(rng.random(len(frame)) < 0.85, None, sparse)
    return frame


AGRAWAL_CATEGORICAL = ("elevel", "car", "zipcode")
STREAMS = (
    Stream("sea", "classification", 200, sea, quick=True),
    Stream("hyperplane", "classification", 200, hyperplane),
    Stream("rbf-drift", "classification", 200, rbf),
    Stream("agrawal", "classification", 200, agrawal, AGRAWAL_CATEGORICAL),
    Stream("led-drift", "classification", 100, led, quick=True),
    Stream("friedman-drift", "regression", 100, friedman, quick=True),
    Stream("shuttle", "classification", 300, _bundled("Shuttle")),
    Stream("image-segments", "classification", 75, _bundled("ImageSegments")),
    Stream("bananas", "classification", 175, _bundled("Bananas")),
    Stream("trump-approval", "regression", 33, _bundled("TrumpApproval"), quick=True),
    Stream("sea-wide-500", "classification", 200, wide_sea),
    Stream("agrawal-missing-30", "classification", 200, missing_labels,
           AGRAWAL_CATEGORICAL + ("referral",), quick=True),
    # Added in the twenty-fourth session, after every default was chosen: streams the
    # defaults had not been run on (STAGGER's codes named categorical, as a user would).
    Stream("stagger", "classification", 200, stagger, ("size", "color", "shape")),
    Stream("mv", "regression", 250, mv),
    Stream("phishing", "classification", 50, _bundled("Phishing")),
)
SHARED = ("elec2", "weather", "bikes")


def write_stream(stream: Stream, batches: int, folder: Path) -> tuple[GreenloopConfig, Path]:
    """The stream as a CSV and a DATA-ONLY config (what a new user writes), laid out as a
    greenloop home: `greenloop compare --config FOLDER/configs/NAME.yaml --home FOLDER`."""
    frame = stream.make(stream.batch_rows * batches)
    csv = folder / "data" / f"{stream.name}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False)
    raw = {"name": stream.name, "data": {"path": f"data/{csv.name}", "target": "y",
                                         "task": stream.task, "batch_rows": stream.batch_rows,
                                         "categorical": list(stream.categorical)}}
    (folder / "configs").mkdir(exist_ok=True)
    (folder / "configs" / f"{stream.name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return GreenloopConfig.model_validate(raw), csv


def shared_config(name: str, home: Path) -> tuple[GreenloopConfig, Path]:
    """A shared stream with its config's data section only: name and data, nothing tuned."""
    full = load_config(home / "configs" / f"{name}.yaml")
    cfg = GreenloopConfig.model_validate({"name": full.name, "data": full.data.model_dump()})
    return cfg, home / full.data.path


def with_overrides(cfg: GreenloopConfig, pairs: list[str]) -> GreenloopConfig:
    """benchmarks/simulate.py's `--set` rule (this folder is on sys.path when run)."""
    from simulate import with_overrides as apply  # benchmarks/simulate.py

    return apply(cfg, pairs)


@dataclass(frozen=True)
class Row:
    stream: str
    task: str
    rows: int
    batch_rows: int
    features: int
    quality: dict[str, float]  # policy -> prequential (accuracy or MAE)
    decisions: dict[str, dict[str, int]]
    promoted: dict[str, int]
    train_cpu_seconds: dict[str, float]  # CPU time in training only: not energy
    seconds: float
    # rows trained on × epochs early stopping ran (deterministic: the training's work)
    train_row_epochs: dict[str, int] = field(default_factory=dict)
    # --schedules: the 16 periodic variants, name -> (quality, training row-epochs)
    schedules: dict[str, tuple[float, int]] = field(default_factory=dict)

    def delta(self) -> float:
        """Default minus periodic, higher-is-better: accuracy points or relative MAE %."""
        g, p = self.quality["gated"], self.quality["periodic"]
        if self.task == "classification":
            return 100 * (g - p)
        return -100 * (g - p) / p

    def verdict(self) -> str:
        g, p, n = self.quality["gated"], self.quality["periodic"], self.quality["naive"]
        if self.task == "classification":
            gap, close, far = 100 * (p - g), CLOSE_POINTS, FAR_POINTS
            beats_naive = g > n
        else:
            gap, close, far = 100 * (g - p) / p, 100 * CLOSE_MAE, 100 * FAR_MAE
            beats_naive = g < n
        if math.isnan(gap):
            return "n/a"
        level = "close" if gap <= close else ("within-far" if gap <= far else "FAR")
        return level + ("" if beats_naive else " NAIVE-WINS")


def run_stream(name: str, task: str, cfg: GreenloopConfig, csv: Path, batches: int,
               overrides: list[str], schedules: bool = False) -> Row:
    stream_batches, schema = load_stream(cfg, csv)
    stream_batches = stream_batches[:batches]
    t0 = time.perf_counter()
    quality: dict[str, float] = {}
    decisions: dict[str, dict[str, int]] = {}
    promoted: dict[str, int] = {}
    train_cpu: dict[str, float] = {}
    row_epochs: dict[str, int] = {}
    for policy in POLICIES:
        chosen = with_overrides(cfg.with_policy(policy), overrides) if overrides \
            else cfg.with_policy(policy)
        row_epochs[policy] = 0

        def count(_: StepInput, out: StepOutcome, policy: str = policy) -> None:
            row_epochs[policy] += out.train_row_epochs

        sim = simulate(chosen, stream_batches, schema, on_step=count)
        summary = sim.summary()
        quality[policy] = float(summary["prequential"])  # type: ignore[arg-type]
        decisions[policy] = sim.decisions()
        promoted[policy] = int(summary["promoted"])  # type: ignore[call-overload]
        train_cpu[policy] = sim.train_cpu()
    first_update = cfg.data.bootstrap_batches + 1  # simulate's first update batch
    quality["naive"] = naive_prequential(task, cfg.data.target, stream_batches, first_update)
    family: dict[str, tuple[float, int]] = {}
    if schedules:
        # The family `compare` searches (issue 10), screened in memory through the same
        # step with the same overrides: the strongest schedule, not only all history.
        base = with_overrides(cfg, overrides) if overrides else cfg
        family = {n: (s.quality, s.train_row_epochs) for n, s in screen_variants(
            base, stream_batches, schema, periodic_variants()).items()}
    rows = sum(len(b.frame) for b in stream_batches)
    return Row(name, task, rows, cfg.data.batch_rows or _mean_rows(stream_batches),
               len(schema.features), quality, decisions, promoted, train_cpu,
               round(time.perf_counter() - t0, 1), row_epochs, family)


def _mean_rows(batches: list[Batch]) -> int:
    return round(sum(len(b.frame) for b in batches) / max(len(batches), 1))


def _fmt(task: str, value: float) -> str:
    return f"{100 * value:.2f}" if task == "classification" else f"{value:.3f}"


def table(rows: list[Row]) -> str:
    head = ("| stream | task | rows | batch | features | default | periodic | delta | finetune "
            "| naive | default decisions (skip/ft/rt, promoted) | train CPU-s default/periodic "
            "| verdict |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        d = r.decisions["gated"]
        unit = " pts" if r.task == "classification" else " %"
        lines.append(
            f"| {r.stream} | {'acc' if r.task == 'classification' else 'MAE'} | {r.rows} "
            f"| {r.batch_rows} | {r.features} | {_fmt(r.task, r.quality['gated'])} "
            f"| {_fmt(r.task, r.quality['periodic'])} | {r.delta():+.2f}{unit} "
            f"| {_fmt(r.task, r.quality['finetune'])} | {_fmt(r.task, r.quality['naive'])} "
            f"| {d['skip']}/{d['finetune']}/{d['retrain']}, {r.promoted['gated']} "
            f"| {r.train_cpu_seconds['gated']:.1f}/{r.train_cpu_seconds['periodic']:.1f} "
            f"| {r.verdict()} |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> str:
    scored = [r for r in rows if r.verdict() != "n/a"]
    close = sum(r.verdict().startswith("close") for r in scored)
    far = sum(r.verdict().startswith("FAR") for r in scored)
    naive = sum("NAIVE-WINS" in r.verdict() for r in scored)
    return (f"{close}/{len(scored)} streams within {CLOSE_POINTS} pts / {100 * CLOSE_MAE:.0f}% "
            f"of periodic (target >= 80%); {far} beyond {FAR_POINTS} pts / "
            f"{100 * FAR_MAE:.0f}% (target 0); naive better on {naive} (target 0)")


def _gap(task: str, value: float, best: float) -> str:
    """How far `value` is from `best`: points, or MAE % (positive = better than best)."""
    if task == "classification":
        return f"{100 * (value - best):+.2f} pts"
    return f"{-100 * (value - best) / best:+.1f} %"


def schedule_cells(task: str, quality: float, work: int,
                   family: dict[str, tuple[float, int]]) -> tuple[str, str, str, str]:
    """(gap to the best schedule, the cheapest schedule within tolerance of `quality`,
    work ratio against it, issue-10 verdict) for one policy. Work is training row-epochs,
    not energy: a deterministic stand-in that leaves out everything but training."""
    best = best_quality(task, family)
    if best is None or math.isnan(quality):
        return "n/a", "n/a", "n/a", "n/a"
    best_q = family[best][0]
    match = cheapest_within(task, quality, family)
    beaten = match is None  # better than every schedule by more than the tolerance
    against = best if beaten else match
    ratio = work / family[against][1] if family[against][1] else math.inf
    verdict = ("close" if within_tolerance(task, quality, best_q) else "short") \
        + (" ≤0.5×" if ratio <= 0.5 else "")
    label = f"{against} ({_fmt(task, family[against][0])}){' beaten' if beaten else ''}"
    return f"{_gap(task, quality, best_q)} ({best})", label, f"{ratio:.2f}", verdict


def schedule_table(rows: list[Row]) -> str:
    """Issue 10's framing on the suite: each policy against the strongest of the 16
    schedules, and against the cheapest one of its quality (training row-epochs)."""
    lines = ["| stream | policy | quality | vs the best schedule | cheapest schedule of its "
             "quality | training work ratio | verdict |", "|" + "---|" * 7]
    for r in rows:
        if not r.schedules:
            continue
        for policy in ("gated", "finetune"):
            cells = schedule_cells(r.task, r.quality[policy], r.train_row_epochs[policy],
                                   r.schedules)
            lines.append(f"| {r.stream} | {'default' if policy == 'gated' else policy} "
                         f"| {_fmt(r.task, r.quality[policy])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def schedule_targets(rows: list[Row]) -> str:
    scored = [schedule_cells(r.task, r.quality["gated"], r.train_row_epochs["gated"],
                             r.schedules)[3] for r in rows if r.schedules]
    close = sum(v.startswith("close") for v in scored)
    cheap = sum(v.endswith("≤0.5×") for v in scored)
    both = sum(v == "close ≤0.5×" for v in scored)
    return (f"default against the 16 schedules: within {CLOSE_POINTS} pts / "
            f"{100 * CLOSE_MAE:.0f}% of the best on {close}/{len(scored)}; at most half the "
            f"training work of the cheapest schedule of its quality on {cheap}; both on {both}")


def chosen_streams(args: argparse.Namespace) -> Iterator[tuple[str, Stream | None]]:
    only = set(args.only.split(",")) if args.only else None
    for s in STREAMS:
        if (only is None or s.name in only) and (s.quick or not args.quick or only):
            yield s.name, s
    for name in SHARED:
        if (only is None or name in only) and not args.quick:
            yield name, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 streams, 20 batches each")
    ap.add_argument("--batches", type=int, default=None, help="batches per stream (default 30)")
    ap.add_argument("--only", default="", help="comma-separated stream names")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override for every policy, as benchmarks/simulate.py --set")
    ap.add_argument("--out", type=Path, default=None, help="folder for the CSVs and configs")
    ap.add_argument("--schedules", action="store_true",
                    help="also screen the 16 periodic schedules `compare` searches and judge "
                         "the default against the best of them (issue 10's framing)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the pipeline (tasks/runtime.py)
    batches = args.batches or (20 if args.quick else 30)
    home = Path(__file__).resolve().parent.parent
    folder = args.out or Path(tempfile.mkdtemp(prefix="greenloop-suite-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    wall0 = time.perf_counter()
    for name, stream in chosen_streams(args):
        if stream is None:
            cfg, csv = shared_config(name, home)
            task = cfg.data.task
        else:
            cfg, csv = write_stream(stream, batches, folder)
            task = stream.task
        row = run_stream(name, task, cfg, csv, batches, args.set, args.schedules)
        rows.append(row)
        print(f"# {name}: {json.dumps(row.quality)} {row.seconds}s", flush=True)
    print(table(rows))
    print(targets(rows))
    if args.schedules:
        print(schedule_table(rows))
        print(schedule_targets(rows))
    print(f"# {batches} batches per stream, wall {time.perf_counter() - wall0:.0f} s, "
          f"load average {os.getloadavg()[0]:.2f}, data in {folder} (a greenloop home: "
          f"greenloop compare --config {folder}/configs/NAME.yaml --home {folder})")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))


if __name__ == "__main__":
    main()
