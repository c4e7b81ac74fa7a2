"""The per-batch task of `update`: the core's one `step`, with the pipeline's edges.

`load_work` reads what the step needs from the ledger (the batch, its history, the
champion); `run_step` calls `greenloop.step.step` with a CodeCarbon meter per phase and
the carbon-window gate; registration (MLflow, the alias, the ledger row) is registry.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import overload

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from greenloop.carbon import apply_carbon_window
from greenloop.drift import DriftResult, write_report
from greenloop.energy import Reading
from greenloop.faults import checkpoint
from greenloop.ledger import BatchRow, HistoryRef
from greenloop.model import TabularModel
from greenloop.policy import Decision
from greenloop.step import Champion, Edges, StepInput, StepOutcome, step
from greenloop.steps import Batch, Verdict, concat
from tasks.quoted import quoted_task
from tasks.report import report_path
from tasks.runtime import Runtime


@dataclass
class Work:
    """One batch while it is processed: the step's input, its outcome, the energy."""

    inp: StepInput
    out: StepOutcome | None = None
    report: Path | None = None
    energy: dict[str, Reading] = field(default_factory=dict)

    # What registration reads, named as before the step existed.
    @property
    def batch(self) -> Batch:
        return self.inp.batch

    @property
    def champion(self) -> TabularModel | None:
        return self.inp.champion.model

    @property
    def champion_version(self) -> int | None:
        return self.inp.champion.version

    @property
    def quality_before(self) -> float:
        return self.out.quality_before if self.out else float("nan")

    @property
    def drift(self) -> DriftResult | None:
        return self.out.drift if self.out else None

    @property
    def decision(self) -> Decision | None:
        return self.out.decision if self.out else None

    @property
    def candidate(self) -> TabularModel | None:
        return self.out.candidate if self.out else None

    @property
    def verdict(self) -> Verdict | None:
        return self.out.verdict if self.out else None

    @property
    def train_rows(self) -> int:
        return self.out.train_rows if self.out else 0

    @property
    def train_row_epochs(self) -> int:
        return self.out.train_row_epochs if self.out else 0


class History(Sequence[Batch]):
    """A batch's history as the step sees it: each batch made (`Runtime.batch`) only when
    the step asks for it. A skip asks for its reference window and a few seqs, a
    fine-tune for its replay batches; only a retrain on all history asks for them all.
    Made up front, every arrival paid one lookup per batch ever accepted."""

    def __init__(self, rt: Runtime, refs: list[HistoryRef]) -> None:
        self._rt, self._refs = rt, refs

    def __len__(self) -> int:
        return len(self._refs)

    @overload
    def __getitem__(self, i: int) -> Batch: ...
    @overload
    def __getitem__(self, i: slice) -> list[Batch]: ...
    def __getitem__(self, i: int | slice) -> Batch | list[Batch]:
        if isinstance(i, slice):
            return [self._made(h) for h in self._refs[i]]
        return self._made(self._refs[i])

    def _made(self, h: HistoryRef) -> Batch:
        return self._rt.batch(h.hash, h.seq, h.accepted_path, h.dvc_md5)


def load_work(rt: Runtime, row: BatchRow, force: str | None = None) -> Work:
    batch = rt.batch(row.hash, row.seq, row.accepted_path or "", row.dvc_md5)
    batch.frame  # noqa: B018 - read now: a damaged file fails here, before any step runs
    # The history is read when the step needs it (a skip: its drift reference only).
    history = History(rt, rt.ledger.history(rt.model_name, row.seq))
    version = rt.ledger.champion(rt.model_name)
    champion = Champion()
    if version is not None:
        info = rt.ledger.version(rt.model_name, version) or {}
        champion = Champion(version, rt.model(version), info.get("reference_quality"),
                            info.get("trained_through"))
    inp = StepInput(batch, history, champion, rt.ledger.update_index(rt.model_name, row.seq),
                    rt.ledger.mean_train_energy(rt.model_name), rt.ledger.mean_gain(rt.model_name),
                    force, refused_retrains=lambda: rt.ledger.refused_retrains(rt.model_name))
    return Work(inp)


def edges(rt: Runtime, work: Work) -> Edges:
    @contextmanager
    def phase(name: str, action: str | None) -> Iterator[None]:
        metered = "evaluate" if name == "observe" else name  # the ledger's phase names
        if name in ("observe", "drift"):
            checkpoint(name)  # fault injection (greenloop/faults.py) before the phase
        try:
            with rt.meter.phase(metered) as reading:
                yield
                if name == "train":
                    checkpoint("train")  # after training, inside its meter
        finally:  # a failed attempt keeps its energy too
            work.energy[metered] = work.energy.get(metered, Reading()) + reading
            # Written at once, so a crash later in the batch keeps this attempt's energy.
            rt.ledger.add_energy(rt.model_name, work.batch.digest, metered,
                                 reading.as_dict(), action)

    def gate(decision: Decision, drift: DriftResult | None) -> Decision:
        return carbon_gate(rt, work, decision, drift)

    return Edges(phase=phase, gate=gate)


@quoted_task("step")
def run_step(rt: Runtime, work: Work) -> Work:
    """observe -> drift -> decide -> train -> judge (greenloop/step.py), metered."""
    work.out = step(work.inp, rt.cfg, rt.schema, rt.policy, edges(rt, work))
    return drift_report(rt, work)


def carbon_gate(rt: Runtime, work: Work, decision: Decision,
                drift: DriftResult | None) -> Decision:
    """Off unless schedule.carbon_window_hours is set (greenloop/carbon.py has the rule)."""
    sched = rt.cfg.schedule
    if not sched.carbon_window_hours:
        return decision
    pending = rt.ledger.pending_retrain(rt.model_name) is not None
    out = apply_carbon_window(decision, drift.share if drift else None, sched,
                              datetime.now(UTC), pending)
    if out.deferred:
        rt.ledger.defer_retrain(rt.model_name, work.batch.digest, work.batch.seq, out.reason)
    if out.reason:
        log(f"{rt.model_name} batch {work.batch.seq}: {out.reason}")
    return out.decision


def log(message: str) -> None:
    try:
        get_run_logger().info(message)
    except MissingContextError:
        print(message)


def drift_report(rt: Runtime, work: Work) -> Work:
    """The full Evidently HTML report, when a decision needs explaining (config)."""
    mode, action = rt.cfg.drift.report, work.decision.action if work.decision else "skip"
    wanted = {"always": True, "never": False, "on_action": action != "skip",
              "on_retrain": action == "retrain"}[mode]
    if not wanted or work.out is None or not work.out.reference:
        return work
    with rt.meter.phase("drift") as reading:
        path = report_path(rt, work.batch.seq)
        reference = concat([b.frame for b in work.out.reference])
        work.report = write_report(reference, work.batch.frame, rt.schema, rt.cfg.drift, path)
    work.energy["drift"] = work.energy.get("drift", Reading()) + reading
    rt.ledger.add_energy(rt.model_name, work.batch.digest, "drift", reading.as_dict(), action)
    return work
