"""`compare` end to end on a tiny synthetic stream: two policies through the same
pipeline, compare.json with measured figures and ratios, the table, curves and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from flows import call_flow
from flows.compare import compare
from tests.conftest import make_frame, write_project

pytestmark = pytest.mark.integration


def test_compare_two_policies(prefect_harness, home: Path) -> None:
    stream = pd.concat([make_frame(150, seed=s) for s in range(3)]
                       + [make_frame(150, seed=9, shift={"x0": 2.0}, flip=True)],
                       ignore_index=True)
    config = write_project(home, stream, batch_rows=150)
    result = call_flow(compare, str(config), ["gated"], 1, str(home), False, None, "none")

    out = home / "reports" / "compare-synth"
    for name in ("compare.json", "compare.md", "compare.png", "frontier.png",
                 "curves/periodic-e1-wall.csv", "curves/gated.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "compare.json").read_text())
    assert data["dataset"] == "synth" and data["metric"] == "accuracy"
    assert data["baseline"] == "periodic-e1-wall"
    assert set(data["policies"]) == {"periodic-e1-wall", "gated"}
    assert data == json.loads(json.dumps(result, allow_nan=True).replace("NaN", "null"))
    for name, summary in data["policies"].items():
        assert summary["policy"] == name and summary["batches"] == 4
        assert summary["energy_kwh"]["total"] > 0 and summary["cpu_seconds"]["total"] > 0
        assert summary["energy_method"].startswith("CodeCarbon")
        assert set(data["ratios"][name]) >= {"energy_total", "energy_train", "cpu_seconds",
                                             "quality_delta"}
        assert 0 <= data["derived"][name]["overhead_share"] <= 1
    base, gated = data["policies"]["periodic-e1-wall"], data["policies"]["gated"]
    assert data["ratios"]["periodic-e1-wall"]["energy_total"] == pytest.approx(1.0)
    assert data["ratios"]["gated"]["energy_total"] == pytest.approx(
        gated["energy_kwh"]["total"] / base["energy_kwh"]["total"])
    assert data["ratios"]["gated"]["quality_delta"] == pytest.approx(
        gated["prequential"] - base["prequential"])
    assert base["decisions"]["retrain"] == 2  # every post-bootstrap batch
    assert "| gated |" in (out / "compare.md").read_text()

    with (out / "curves" / "periodic-e1-wall.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4]
    energy = [float(r["cumulative_energy_kwh"]) for r in rows]
    assert energy == sorted(energy) and energy[-1] > 0

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("greenloop-synth").experiment_id])
    assert {r.data.tags["policy"] for r in runs} == {"periodic", "gated"}
    assert {m.name for m in client.search_registered_models()} == {"synth-cmp-periodic-e1-wall",
                                                                   "synth-cmp-gated"}
