"""`compare` with the periodic family on a tiny stream: the variants screened, two of them
metered whole in their own namespaces, the iso-quality ratio and the baselines table in
compare.json, `naive` beside them, and --from-batch reporting only the later batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import call_flow
from flows.compare import compare
from greenloop.compare import within_tolerance
from greenloop.policy import periodic_variants
from tests.conftest import drifting_stream, write_project

pytestmark = pytest.mark.integration


def test_compare_baselines_iso_quality(prefect_harness, home: Path) -> None:
    # Every knob explicit: this test is about compare, not about the defaults' calibration.
    knobs = {"promote_tolerance": 0.0, "forgetting_tolerance": 0.05,
             "finetune_drift_share": 0.5, "retrain_drift_share": 0.5}
    config = write_project(home, drifting_stream(), batch_rows=200,
                           overrides={"policy": knobs})
    # `iso`: meter all history every batch plus gated's screened match (one or two variants)
    result = call_flow(compare, str(config), ["gated"], 1, str(home), False, 4, "iso")

    data = json.loads((home / "reports" / "compare-synth" / "compare.json").read_text())
    assert data["baseline"] == "periodic-e1-wall" and data["from_batch"] == 4
    metered = [v for v, b in data["baselines"].items() if b["status"] == "metered"]
    screened = [v for v, b in data["baselines"].items() if b["status"] == "screened"]
    # all history, gated's screened match, and any follow-up a seed mean made necessary
    assert "periodic-e1-wall" in metered and len(metered) <= 2 + 4
    assert set(metered) | set(screened) == set(periodic_variants())  # all 16 in the table
    for v in metered:
        b = data["baselines"][v]
        assert b["energy_kwh"] > 0 and b["cpu_seconds"] > 0 and b["wall_seconds"] > 0
        # the pipeline's quality equals the in-memory screen of the same variant
        assert b["quality"] == pytest.approx(b["screened_quality"])
    for v in screened:
        assert "energy_kwh" not in data["baselines"][v]
    assert set(data["policies"]) == {"gated", *metered}

    iso = data["iso_quality"]["gated"]
    assert iso == data["policies"]["gated"]["iso_quality"]
    base = data["policies"][iso["baseline"]]
    gated = data["policies"]["gated"]
    assert iso["baseline"] in metered
    assert within_tolerance("classification", base["prequential"], gated["prequential"])
    assert iso["energy_total"] == pytest.approx(gated["energy_kwh"]["total"]
                                                / base["energy_kwh"]["total"])
    assert iso["quality_delta"] == pytest.approx(gated["prequential"] - base["prequential"])
    cheaper = [v for v in metered if data["policies"][v]["energy_kwh"]["total"]
               < base["energy_kwh"]["total"]]
    assert not any(within_tolerance("classification", data["policies"][v]["prequential"],
                                    gated["prequential"]) for v in cheaper)
    # and no variant left unmetered that trains less than the baseline and screened within
    # tolerance: the iso match is the cheapest, not the cheapest of those metered
    left = [v for v in screened if data["baselines"][v]["train_row_epochs"]
            < data["baselines"][iso["baseline"]]["train_row_epochs"]
            and within_tolerance("classification", data["baselines"][v]["screened_quality"],
                                 gated["prequential"])]
    assert left == []

    # --from-batch 4: batches 4..6 only (3 batches), whole runs kept beside
    assert all(s["batches"] == 3 for s in data["policies"].values())
    assert data["whole_run"]["gated"]["batches"] == 6
    assert 0 <= data["baselines"]["naive"]["quality"] <= 1
    md = (home / "reports" / "compare-synth" / "compare.md").read_text()
    assert md.index("Iso-quality ratio") < md.index("All metered runs")
    assert "| naive | no model |" in md
    # the hindsight pick: the cheapest metered run near the best quality, with its config
    pick = data["hindsight"]
    assert pick["choice"] in data["policies"]
    picked_kwh = data["policies"][pick["choice"]]["energy_kwh"]["total"]
    cheaper_ok = [p for p, s in data["policies"].items()
                  if s["energy_kwh"]["total"] < picked_kwh
                  and within_tolerance("classification", s["prequential"], pick["best_quality"])]
    assert cheaper_ok == []
    assert md.index("In hindsight") < md.index("All metered runs") and "```yaml" in md
    assert result["iso_quality"]["gated"]["baseline"] == iso["baseline"]

    # every policy in its own namespace; the production model is never touched
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    names = {m.name for m in client.search_registered_models()}
    # (the warm-up ingest has its own ledger stream, and never trains or registers)
    assert names == {f"synth-cmp-{p}" for p in data["policies"]}
    assert "synth-gated" not in names
