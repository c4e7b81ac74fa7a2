"""Warm cost of logging one model version, before and after issue 12: a bare folder
(`state_dict.pt` + `model.json`) against the same folder made an MLflow pyfunc model
(tasks/mlmodel.write_mlmodel: MLmodel, signature, input example, pinned requirements).

Each sample: save the model, [write the MLmodel], log the folder as run artifacts and
create a registered model version, on a local sqlite store, the two kinds interleaved
so machine noise falls on both alike. The run itself (log_run) is not counted: both
kinds pay it the same.

    .venv/bin/python benchmarks/version_cost.py [--versions 40] [--warm 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from greenloop.config import ModelConfig
from greenloop.data import Schema
from greenloop.model import TabularModel
from tasks.mlmodel import write_mlmodel
from tasks.tracking import Tracker


def elec2_like(rows: int, seed: int) -> pd.DataFrame:
    """A week of Elec2's shape: 6 float columns, an integer-coded day, an UP/DOWN label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.random((rows, 6)), columns=[
        "period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"])
    frame["day"] = rng.integers(1, 8, rows)
    frame["class"] = np.where(frame["nswprice"] > 0.5, "UP", "DOWN")
    return frame


def one_version(tracker: Tracker, model: TabularModel, frame: pd.DataFrame, folder: Path,
                pyfunc: bool) -> float:
    run_id = tracker.log_run(folder.name, {"p": 1}, {"m": 1.0}, {"t": "x"})
    start = time.perf_counter()
    model.save(folder)
    if pyfunc:
        write_mlmodel(folder, model, frame)
    tracker.register("pyfunc" if pyfunc else "bare", run_id, folder, {"decision": "retrain"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=40)
    parser.add_argument("--warm", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = Path(tempfile.mkdtemp(prefix="version-cost-"))
    try:
        tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}", "cost", home / "artifacts")
        frame = elec2_like(336, seed=0)
        schema = Schema("class", tuple(frame.columns[:6]), ("day",), ())
        model = TabularModel.create(frame, schema, "classification",
                                    ModelConfig(hidden=[64, 32]), seed=0)
        seconds: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.warm + args.versions):
            for pyfunc in (False, True):
                took = one_version(tracker, model, frame, home / f"v{i}-{pyfunc}", pyfunc)
                if i >= args.warm:
                    seconds[pyfunc].append(took)
        for pyfunc, label in ((False, "bare folder"), (True, "pyfunc model")):
            ms = [s * 1000 for s in seconds[pyfunc]]
            print(f"{label:>12}: median {statistics.median(ms):6.1f} ms, "
                  f"p90 {sorted(ms)[int(0.9 * len(ms))]:6.1f} ms per version "
                  f"(n={len(ms)} warm)")
        extra = statistics.median(seconds[True]) - statistics.median(seconds[False])
        print(f"extra per version (median difference): {extra * 1000:.1f} ms")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
