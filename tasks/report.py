"""`greenloop report`: a batch's Evidently drift report, rendered when someone asks.

The pipeline does not render HTML by default (drift.report: never): on these machines a
report costs more than most retrains. Every batch whose drift was checked records the
seqs of its reference window in the ledger, so the same check can be drawn later, from
the versioned batches, with the config's method and threshold. The HTML goes beside the
others (state/reports/<model>/) and onto the batch's MLflow run; its energy is billed to
the batch as a `drift` phase, as a report rendered in the pipeline would be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from greenloop.drift import write_report
from greenloop.steps import concat
from tasks.runtime import Runtime


class ReportUnavailable(LookupError):
    """The batch cannot have a drift report: the message says why."""


def report_path(rt: Runtime, seq: int) -> Path:
    return rt.ws.state / "reports" / rt.model_name / f"drift-{seq:05d}.html"


def latest_checked(rt: Runtime) -> int:
    """The seq of the last batch whose drift was checked."""
    rows = rt.ledger.query("SELECT MAX(seq) AS seq FROM batches WHERE model=? AND "
                           "reference_seqs IS NOT NULL", (rt.model_name,))
    if not rows or rows[0]["seq"] is None:
        raise ReportUnavailable(f"no batch of {rt.model_name} has a drift check on record yet")
    return int(rows[0]["seq"])


def render_batch_report(rt: Runtime, seq: int | None = None) -> Path:
    """Render batch `seq`'s (default: the last checked batch's) drift report against its
    recorded reference window."""
    row = _row(rt, latest_checked(rt) if seq is None else seq)
    seq = int(row["seq"])
    if not row.get("reference_seqs"):
        raise ReportUnavailable(
            f"batch {seq} of {rt.model_name} has no drift check on record (a bootstrap "
            f"batch, a policy that does not check drift, or a batch processed before "
            f"greenloop recorded reference windows)")
    reference = [_row(rt, s) for s in json.loads(row["reference_seqs"])]
    frames = [_frame(rt, r) for r in reference]
    import evidently  # noqa: F401 - its ~4 s import is the command's, not the batch's bill

    with rt.meter.phase("drift") as reading:
        path = write_report(concat(frames), _frame(rt, row), rt.schema, rt.cfg.drift,
                            report_path(rt, seq))
    rt.ledger.add_energy(rt.model_name, row["hash"], "drift", reading.as_dict(), row["decision"])
    if row.get("mlflow_run_id"):
        rt.tracker.log_artifact(row["mlflow_run_id"], path)
    return path


def _row(rt: Runtime, seq: int) -> dict[str, Any]:
    rows = rt.ledger.query("SELECT * FROM batches WHERE model=? AND seq=?", (rt.model_name, seq))
    if not rows:
        raise ReportUnavailable(f"{rt.model_name} has no batch {seq} in the ledger")
    return rows[0]


def _frame(rt: Runtime, row: dict[str, Any]) -> pd.DataFrame:
    if not row.get("accepted_path") or not (rt.ws.home / row["accepted_path"]).is_file():
        raise ReportUnavailable(f"batch {row['seq']}'s accepted file is missing "
                                f"({row.get('accepted_path') or 'never versioned'}): "
                                f"`dvc checkout` restores it")
    return rt.batch(row["hash"], int(row["seq"]), row["accepted_path"]).frame
