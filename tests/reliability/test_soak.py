"""Soak (slow, minutes): `greenloop run` over all of Elec2 with random kills and failures
injected, re-run until done, against a fault-free run of the same stream.

GREENLOOP_SOAK_BATCHES=N limits the stream to its first N batches (default: all 135);
GREENLOOP_SOAK_FAULTS sets the faults (default: random:0.004,random:0.002:fail).
`python -m tests.reliability.soak` runs the same thing outside pytest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.reliability.soak import compare, run_until_done

pytestmark = [pytest.mark.slow, pytest.mark.timeout(4 * 3600)]
MODEL = "elec2-gated"


def test_soak_elec2_with_random_faults(tmp_path: Path) -> None:
    batches = int(os.environ.get("GREENLOOP_SOAK_BATCHES", "0")) or None
    faults = os.environ.get("GREENLOOP_SOAK_FAULTS", "random:0.004,random:0.002:fail")
    ref = run_until_done(tmp_path / "reference", "configs/elec2.yaml", None, batches,
                         max_attempts=1)
    assert ref["finished"], (tmp_path / "reference" / "soak.log").read_text()[-3000:]
    soak = run_until_done(tmp_path / "soak", "configs/elec2.yaml", faults, batches)
    assert soak["finished"], (tmp_path / "soak" / "soak.log").read_text()[-3000:]

    report = compare(tmp_path / "soak", tmp_path / "reference", MODEL)
    print(json.dumps({"soak": soak, **report}, indent=1))
    assert report["batches"] == report["reference_batches"] == report["unique_hashes"]
    assert report["processed"] == report["batches"] and report["lost"] == 0
    assert report["ledger_versions_missing_in_mlflow"] == []
    assert report["champion_ledger"] == report["champion_mlflow_alias"] is not None
    assert report["same_decisions"], report
    assert report["max_quality_before_diff"] <= 1e-9
    assert abs(report["prequential"] - report["prequential_reference"]) <= 1e-9
