"""Register: one MLflow run per batch, a model version per trained candidate, the
`champion` alias moved by compare-and-swap, and the ledger row closed last."""

from __future__ import annotations

import json
import math
import re
import shutil

from greenloop.energy import Reading
from greenloop.evaluate import metric_name
from greenloop.faults import checkpoint
from greenloop.ledger import LineageConflict
from greenloop.step import labelled_rows
from greenloop.steps import quality_gain
from tasks.mlmodel import write_mlmodel
from tasks.pipeline import Work
from tasks.quoted import quoted_task
from tasks.runtime import Runtime
from tasks.tracking import DatasetRef, RegisteredModelMissing

DRIFT_SCORES_LOGGED = 20  # per-column drift scores per run: the most drifted columns


# MLflow's metric names: word characters, `_ - . :` and space, and `/` where it makes no
# path. A column may be called anything (`price (USD)`): a name MLflow refuses failed the
# whole batch's run before, so everything else becomes `_`.
_NOT_IN_METRIC_NAMES = re.compile(r"[^\w.\- :]")
MAX_METRIC_NAME = 250  # MLflow's limit on a key


def score_key(column: str) -> str:
    """The metric name of a column's drift score."""
    return f"drift_score.{_NOT_IN_METRIC_NAMES.sub('_', column)}"[:MAX_METRIC_NAME]


def _metrics(rt: Runtime, work: Work) -> dict[str, float]:
    m = metric_name(rt.cfg.data.task)
    labelled = labelled_rows(work.batch, rt.cfg)
    out: dict[str, float] = {f"{m}_before": work.quality_before, "rows": len(work.batch.frame),
                             "labelled_rows": labelled,
                             "unlabelled_rows": len(work.batch.frame) - labelled,
                             "train_rows": work.train_rows,
                             # deterministic training work, beside its measured energy
                             "train_row_epochs": work.train_row_epochs}
    if work.drift is not None:
        out["drift_share"] = work.drift.share
        out["drifted_columns"] = work.drift.n_drifted
        top = work.drift.top_scores(DRIFT_SCORES_LOGGED)
        out.update({score_key(c): v for c, v in top.items()})
    if work.verdict is not None:
        out[f"{m}_after"] = work.verdict.candidate_recent
        out[f"{m}_champion_holdout"] = work.verdict.champion_recent
        out[f"{m}_reference_candidate"] = work.verdict.candidate_reference
        out[f"{m}_reference_champion"] = work.verdict.champion_reference
    for phase, r in work.energy.items():
        out[f"energy_kwh.{phase}"] = r.energy_kwh
        out[f"cpu_seconds.{phase}"] = r.cpu_seconds
        out[f"wall_seconds.{phase}"] = r.wall_seconds
    out["energy_kwh"] = sum(r.energy_kwh for r in work.energy.values())
    out["emissions_kg"] = sum(r.emissions_kg for r in work.energy.values())
    return out


def _tags(rt: Runtime, work: Work, row_md5: str | None) -> dict[str, str]:
    d = work.decision
    assert d is not None
    tags = {"batch_hash": work.batch.digest, "batch_seq": str(work.batch.seq),
            "dvc_md5": row_md5 or "", "decision": d.action, "reason": d.reason,
            "policy": rt.policy_name, "model": rt.model_name,
            "champion_version": str(work.champion_version or ""),
            "drifted_columns": ",".join(work.drift.drifted) if work.drift else "",
            "energy_method": rt.meter.method()}
    if work.report is None and _reference_seqs(work):  # how to see it, in the run itself
        tags["drift_report"] = (f"greenloop report --config {rt.config_path} "
                                f"--seq {work.batch.seq}")
    return tags


@quoted_task("register")
def register(rt: Runtime, work: Work) -> dict[str, object]:
    reading = Reading()
    try:
        with rt.meter.phase("overhead") as reading:
            return _register(rt, work)
    finally:  # recorded on failure too: a failed attempt keeps its energy
        work.energy["overhead"] = work.energy.get("overhead", Reading()) + reading
        action = work.decision.action if work.decision else None
        rt.ledger.add_energy(rt.model_name, work.batch.digest, "overhead", reading.as_dict(),
                             action)


def _register(rt: Runtime, work: Work) -> dict[str, object]:
    row = rt.ledger.batch(rt.model_name, work.batch.digest)
    md5 = row.dvc_md5 if row else None
    tags = _tags(rt, work, md5)
    params = {"policy": rt.policy_name, "batch_seq": work.batch.seq, "rows": len(work.batch.frame),
              "drift_method": rt.cfg.drift.method, "drift_threshold": rt.cfg.drift.threshold,
              "decision": tags["decision"], "config": rt.config_path}
    artifacts = [work.report] if work.report else []
    checkpoint("register")
    run_id = rt.tracker.log_run(f"{rt.model_name}-b{work.batch.seq:05d}", params,
                                _metrics(rt, work), tags, artifacts,
                                datasets=_dataset(rt, work, row.accepted_path if row else None,
                                                  md5),
                                parent_run_id=rt.parent_run_id)
    version = None
    version_row: dict[str, object] | None = None
    promote_to: tuple[int, int | None, str] | None = None
    if work.candidate is not None and work.verdict is not None:
        version, version_row = _register_candidate(rt, work, run_id, md5 or "")
        if work.verdict.promote:
            promote_to = (version, work.champion_version, work.verdict.reason)
    checkpoint("after_register")
    role = "bootstrap" if work.champion is None else "update"
    values = dict(
        role=role, decision=work.decision.action if work.decision else None,
        reason=work.decision.reason if work.decision else None, version=version,
        quality_before=None if math.isnan(work.quality_before) else work.quality_before,
        quality_after=work.verdict.candidate_recent if work.verdict else None,
        drift_share=work.drift.share if work.drift else None, mlflow_run_id=run_id, error=None,
        labelled_rows=labelled_rows(work.batch, rt.cfg), reference_seqs=_reference_seqs(work))
    # One ledger transaction: the version, the champion (compare-and-swap against the
    # champion when training began) and `processed`. Then the MLflow alias follows.
    promoted = rt.ledger.complete_batch(rt.model_name, work.batch.digest, values,
                                        version_row, promote_to)
    if promoted:
        assert version is not None
        checkpoint("alias")
        rt.tracker.set_champion(rt.model_name, version)
        rt.models.setdefault(version, rt.model(version))
    return {"seq": work.batch.seq, "decision": tags["decision"], "version": version,
            "promoted": promoted, "run_id": run_id}


def _reference_seqs(work: Work) -> str | None:
    """The reference window's seqs, when drift was checked (`greenloop report` reads it)."""
    if work.drift is None or work.out is None or not work.out.reference:
        return None
    return json.dumps([b.seq for b in work.out.reference])


def _dataset(rt: Runtime, work: Work, accepted_path: str | None,
             md5: str | None) -> list[DatasetRef]:
    """The batch as the run's dataset input (the UI's Dataset column): digest = its DVC
    md5, source = the accepted file. None when the batch was never versioned."""
    if not accepted_path or not md5:
        return []
    context = "training" if work.candidate is not None else "batch"
    return [DatasetRef(name=f"{rt.cfg.name}-b{work.batch.seq:05d}", digest=md5,
                       source=str(rt.ws.home / accepted_path), context=context,
                       rows=len(work.batch.frame))]


def _register_candidate(rt: Runtime, work: Work, run_id: str,
                        md5: str) -> tuple[int, dict[str, object]]:
    """An MLflow model version with its files; returns it and its ledger row (written
    by the caller together with the batch, so a crash here leaves only an orphan
    MLflow version, never a ledger that points at something half made)."""
    assert work.candidate is not None and work.verdict is not None and work.decision is not None
    folder = rt.ws.models(rt.model_name)
    staging = folder / f".staging-{work.batch.digest[:16]}"
    shutil.rmtree(staging, ignore_errors=True)
    work.candidate.save(staging)
    write_mlmodel(staging, work.candidate, work.batch.frame)  # a pyfunc model, not bare files
    energy_kwh = sum(r.energy_kwh for r in work.energy.values())
    parent = work.champion_version if work.decision.action == "finetune" else None
    lineage = energy_kwh + (rt.ledger.lineage_energy(rt.model_name, parent) if parent else 0.0)
    train = work.energy.get("train")
    tags = {"decision": work.decision.action, "reason": work.decision.reason,
            "parent_version": str(parent or ""), "data_md5": md5, "batch_hash": work.batch.digest,
            "energy_kwh": f"{energy_kwh:.9f}",
            "emissions_kg": f"{sum(r.emissions_kg for r in work.energy.values()):.9f}",
            "cpu_seconds": f"{sum(r.cpu_seconds for r in work.energy.values()):.3f}",
            "train_energy_kwh": f"{train.energy_kwh if train else 0.0:.9f}",
            "lineage_energy_kwh": f"{lineage:.9f}", "promotion": work.verdict.reason}
    version = rt.tracker.register(rt.model_name, run_id, staging, tags)
    check_identity(rt, version, work.batch.digest, run_id)
    final = folder / f"v{version}"
    shutil.rmtree(final, ignore_errors=True)  # an orphan's files: no ledger row names it
    staging.replace(final)
    row: dict[str, object] = dict(
        version=version, parent=parent, decision=work.decision.action,
        reason=work.decision.reason, batch_hash=work.batch.digest,
        trained_through=work.batch.seq, reference_quality=work.verdict.eval_quality,
        holdout_gain=quality_gain(rt.cfg.data.task, work.verdict), energy_kwh=energy_kwh,
        lineage_energy_kwh=lineage, data_md5=md5, run_id=run_id)
    return version, row


def check_identity(rt: Runtime, version: int, digest: str, run_id: str) -> None:
    """The version number MLflow just gave must be new to the ledger: if a ledger row
    already names it (another batch or run), MLflow's numbering restarted (registered
    model deleted, mlflow.db replaced) and continuing would overwrite lineage."""
    known = rt.ledger.version(rt.model_name, version)
    if known is None or (known["batch_hash"] == digest and known.get("run_id") == run_id):
        return
    raise LineageConflict(
        f"{rt.model_name} v{version}: MLflow registered it for batch {digest[:12]} (run "
        f"{run_id}), but the ledger already has v{version} from batch "
        f"{str(known['batch_hash'])[:12]} (run {known.get('run_id')}). MLflow's registry "
        f"and the ledger disagree (registered model deleted or mlflow.db replaced); refusing "
        f"to continue. Restore MLflow's database, or start a new stream with --restart")


def promote(rt: Runtime, version: int, expected: int | None, reason: str) -> bool:
    """Ledger first (compare-and-swap against `expected`), then the MLflow alias;
    `reconcile` repairs the alias if a crash falls in between."""
    if not rt.ledger.move_champion(rt.model_name, version, expected, reason):
        return False
    checkpoint("alias")
    rt.tracker.set_champion(rt.model_name, version)
    rt.models.setdefault(version, rt.model(version))
    return True


def reconcile(rt: Runtime, fresh: bool = False) -> None:
    """Make the MLflow alias agree with the ledger (the record of truth). `fresh` reads
    MLflow rather than this process's memory (one request, before each batch): a
    registered model deleted meanwhile must stop the stream at the next batch, a skip
    included, not at the next training."""
    version = rt.ledger.champion(rt.model_name)
    if version is None:
        return
    if fresh:
        try:
            current = rt.tracker.registry_champion(rt.model_name)
        except RegisteredModelMissing:
            raise LineageConflict(
                f"{rt.model_name}: MLflow has no registered model of this name, but the "
                f"ledger's champion is v{version}. MLflow's registry and the ledger disagree "
                f"(registered model deleted or mlflow.db replaced); refusing to continue. "
                f"Restore MLflow's database, or start a new stream with --restart") from None
    else:
        current = rt.tracker.known_champion(rt.model_name)
    if current != version:
        rt.tracker.set_champion(rt.model_name, version)
