"""The per-batch tasks of `update`: observe, drift, decide, act, evaluate.

Each one wraps a pure step from `greenloop/` in the energy meter of its phase and
records what it measured on the batch's `Work` record; registration is in registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from greenloop.carbon import apply_carbon_window
from greenloop.drift import DriftResult, detect, write_report
from greenloop.energy import Reading
from greenloop.evaluate import evaluate, relative_drop
from greenloop.faults import checkpoint
from greenloop.ledger import BatchRow
from greenloop.model import TabularModel
from greenloop.policy import Decision, Observation
from greenloop.steps import Batch, Verdict, concat, judge, train_candidate, training_rows
from tasks.quoted import quoted_task
from tasks.runtime import Runtime


@dataclass
class Work:
    """Everything measured about one batch while it is processed."""

    batch: Batch
    history: list[Batch]
    champion_version: int | None
    champion: TabularModel | None
    reference: list[Batch] = field(default_factory=list)
    quality_before: float = float("nan")
    drift: DriftResult | None = None
    decision: Decision | None = None
    candidate: TabularModel | None = None
    verdict: Verdict | None = None
    train_rows: int = 0
    report: Path | None = None
    energy: dict[str, Reading] = field(default_factory=dict)

    def meter(self, rt: Runtime, phase: str):  # noqa: ANN201 - a context manager
        return _PhaseRecorder(rt, self, phase)


class _PhaseRecorder:
    def __init__(self, rt: Runtime, work: Work, phase: str) -> None:
        self.rt, self.work, self.phase = rt, work, phase

    def __enter__(self) -> None:
        self._cm = self.rt.meter.phase(self.phase)
        self._reading = self._cm.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)
        prev = self.work.energy.get(self.phase, Reading())
        self.work.energy[self.phase] = prev + self._reading
        action = self.work.decision.action if self.work.decision else None
        # Written at once, so a crash later in the batch keeps this attempt's energy.
        self.rt.ledger.add_energy(self.rt.model_name, self.work.batch.digest, self.phase,
                                  self._reading.as_dict(), action)


def load_work(rt: Runtime, row: BatchRow) -> Work:
    batch = rt.batch(row.hash, row.seq, row.accepted_path or "")
    history = [rt.batch(h.hash, h.seq, h.accepted_path or "")
               for h in rt.ledger.history(rt.model_name, row.seq)]
    version = rt.ledger.champion(rt.model_name)
    champion = rt.model(version) if version is not None else None
    return Work(batch, history, version, champion)


def reference_window(rt: Runtime, work: Work) -> list[Batch]:
    """The last `reference_batches` batches the champion had seen when it was trained."""
    version = work.champion_version
    info = rt.ledger.version(rt.model_name, version) if version else None
    through = info["trained_through"] if info else work.batch.seq - 1
    seen = [b for b in work.history if b.seq <= through]
    return seen[-rt.cfg.drift.reference_batches:]


@quoted_task("observe")
def observe(rt: Runtime, work: Work) -> Work:
    """Test-then-train: the champion predicts the batch before anything learns from it."""
    checkpoint("observe")
    with work.meter(rt, "evaluate"):
        if work.champion is not None:
            work.quality_before = evaluate(work.champion, work.batch.frame, rt.cfg.data.target)
    return work


@quoted_task("drift")
def check_drift(rt: Runtime, work: Work) -> Work:
    if work.champion is None:
        return work  # nothing to drift from before the bootstrap
    checkpoint("drift")
    with work.meter(rt, "drift"):
        work.reference = reference_window(rt, work)
        reference = concat([b.frame for b in work.reference])
        work.drift = detect(reference, work.batch.frame, rt.schema, rt.cfg.drift)
    return work


def decide(rt: Runtime, work: Work, force: str | None = None) -> Work:
    """The policy's decision; `force` (a reason) makes it a full retrain (the scheduled
    `full-retrain` deployment). Then the carbon window may defer a non-urgent retrain."""
    if work.champion is None:
        work.decision = bootstrap_decision(rt, work)
        return work
    task_kind, target = rt.cfg.data.task, rt.cfg.data.target
    info = rt.ledger.version(rt.model_name, work.champion_version)
    reference_quality = info["reference_quality"] if info else work.quality_before
    classify = work.champion is not None and task_kind == "classification"
    known = set(work.champion.pre.classes) if classify else set()
    new_classes = sorted(set(work.batch.frame[target].astype(str)) - known) if known else []
    assert work.drift is not None
    obs = Observation(
        batch_index=_update_index(rt, work),
        drift_share=work.drift.share, drifted_columns=work.drift.drifted,
        quality_drop=relative_drop(task_kind, reference_quality, work.quality_before),
        new_classes=new_classes,
        mean_energy_kwh=rt.ledger.mean_train_energy(rt.model_name),
        mean_gain=rt.ledger.mean_gain(rt.model_name),
    )
    work.decision = rt.policy.decide(obs)
    if force:
        work.decision = Decision("retrain", f"{force}; policy said: {work.decision.action} "
                                            f"({work.decision.reason})")
        return work  # a scheduled retrain runs when scheduled: put its cron in the window
    return carbon_gate(rt, work)


def carbon_gate(rt: Runtime, work: Work) -> Work:
    """Off unless schedule.carbon_window_hours is set (greenloop/carbon.py has the rule)."""
    sched = rt.cfg.schedule
    if not sched.carbon_window_hours or work.decision is None:
        return work
    pending = rt.ledger.pending_retrain(rt.model_name) is not None
    out = apply_carbon_window(work.decision, work.drift.share if work.drift else None, sched,
                              datetime.now(UTC), pending)
    if out.deferred:
        rt.ledger.defer_retrain(rt.model_name, work.batch.digest, work.batch.seq, out.reason)
    if out.reason:
        get_run_logger_or_print(f"{rt.model_name} batch {work.batch.seq}: {out.reason}")
    work.decision = out.decision
    return work


def get_run_logger_or_print(message: str) -> None:
    try:
        get_run_logger().info(message)
    except MissingContextError:
        print(message)


def bootstrap_decision(rt: Runtime, work: Work) -> Decision:
    """No champion yet: collect `bootstrap_batches` batches, then train the first model."""
    have, need = len(work.history) + 1, rt.cfg.data.bootstrap_batches
    if have < need:
        return Decision("skip", f"bootstrap: {have} of {need} batches collected")
    return Decision("retrain", f"bootstrap: first model on {have} batches")


def _update_index(rt: Runtime, work: Work) -> int:
    done = rt.ledger.batches(rt.model_name, ("processed",))
    return sum(1 for b in done if b.role == "update" and b.seq < work.batch.seq)


@quoted_task("act")
def act(rt: Runtime, work: Work) -> Work:
    """Train a candidate; the champion object is never modified."""
    assert work.decision is not None
    with work.meter(rt, "train"):
        seed = rt.cfg.model.seed + work.batch.seq
        rows = training_rows(work.decision.action, work.batch, work.history, rt.cfg, seed)
        work.train_rows = len(rows)
        work.candidate = train_candidate(work.decision.action, work.champion, rows, rt.schema,
                                         rt.cfg, seed)
        checkpoint("train")
    return work


@quoted_task("evaluate")
def evaluate_candidate(rt: Runtime, work: Work) -> Work:
    """Candidate vs champion on recent and reference holdouts; the drift report if due."""
    assert work.candidate is not None
    with work.meter(rt, "evaluate"):
        window = work.reference or work.history[-rt.cfg.drift.reference_batches:]
        reference = concat([b.holdout for b in window])
        work.verdict = judge(work.candidate, work.champion, work.batch.holdout, reference, rt.cfg)
    return drift_report(rt, work)


def drift_report(rt: Runtime, work: Work) -> Work:
    """The full Evidently HTML report, when a decision needs explaining (config)."""
    mode, action = rt.cfg.drift.report, work.decision.action if work.decision else "skip"
    wanted = {"always": True, "never": False, "on_action": action != "skip",
              "on_retrain": action == "retrain"}[mode]
    if not wanted or not work.reference:
        return work
    with work.meter(rt, "drift"):
        path = rt.ws.state / "reports" / rt.model_name / f"drift-{work.batch.seq:05d}.html"
        reference = concat([b.frame for b in work.reference])
        work.report = write_report(reference, work.batch.frame, rt.schema, rt.cfg.drift, path)
    return work
