"""A stream through the one per-batch step, in memory: quality without the edges.

No ledger, MLflow, DVC or CodeCarbon: the champion is kept in memory and `step` is called
with no edges. Because the served/replayed pipeline calls the same `step` with the same
inputs, decisions, promotions and prequential quality here equal the pipeline's
(tests/integration/test_step_equivalence.py checks it). Used to screen thresholds and
baselines before any energy is measured; it says nothing about energy.
"""

from __future__ import annotations

import hashlib
import math
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from greenloop.config import GreenloopConfig
from greenloop.data import Schema, infer_schema, read_table, split_stream, validate_batch
from greenloop.policy import Policy, make_policy
from greenloop.step import Champion, StepInput, StepOutcome, advance, labelled_rows, step
from greenloop.steps import Batch, make_batch


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def load_stream(cfg: GreenloopConfig, source_path: Path) -> tuple[list[Batch], Schema]:
    """The source cut into batches exactly as `greenloop prepare` + ingest cut and split
    them (same CSV bytes, so the same content hash and the same holdout rows)."""
    source = read_table(source_path)
    schema = infer_schema(source, cfg.data)
    batches = []
    for i, part in enumerate(split_stream(source, cfg.data)):
        frame = validate_batch(part, schema, cfg.data)
        digest = hashlib.sha256(part.to_csv(index=False).encode()).hexdigest()
        batches.append(make_batch(i + 1, digest, frame, cfg.train.holdout_fraction))
    return batches, schema


@dataclass(frozen=True)
class BatchRecord:
    seq: int
    role: str  # bootstrap | update
    decision: str
    quality_before: float
    labelled_rows: int
    promoted_version: int | None
    train_cpu_seconds: float = 0.0  # measured around this batch's training, if it trained


@dataclass
class Simulation:
    records: list[BatchRecord] = field(default_factory=list)

    def updates(self, from_seq: int = 0) -> list[BatchRecord]:
        return [r for r in self.records if r.role == "update" and r.seq >= from_seq]

    def prequential(self, from_seq: int = 0, to_seq: int | None = None) -> float:
        """Labelled-row-weighted test-then-train quality over update batches (seq in
        [from_seq, to_seq) when `to_seq` is given)."""
        rows = [r for r in self.updates(from_seq)
                if r.labelled_rows and not math.isnan(r.quality_before)
                and (to_seq is None or r.seq < to_seq)]
        n = sum(r.labelled_rows for r in rows)
        return sum(r.quality_before * r.labelled_rows for r in rows) / n if n else math.nan

    def halves(self, from_seq: int = 0) -> tuple[float, float]:
        """Prequential quality over the first and the second half of the update batches
        (by count; the middle one goes to the second half): NaN with fewer than two."""
        seqs = [r.seq for r in self.updates(from_seq)]
        if len(seqs) < 2:
            return math.nan, math.nan
        middle = seqs[len(seqs) // 2]
        return self.prequential(from_seq, middle), self.prequential(middle)

    def train_cpu(self, from_seq: int = 0) -> float:
        """CPU-seconds measured around training, batches with seq >= from_seq."""
        return sum(r.train_cpu_seconds for r in self.records if r.seq >= from_seq)

    def decisions(self, from_seq: int = 0) -> dict[str, int]:
        out = {"skip": 0, "finetune": 0, "retrain": 0}
        for r in self.updates(from_seq):
            out[r.decision] += 1
        return out

    def summary(self, from_seq: int = 0) -> dict[str, object]:
        return {"prequential": self.prequential(from_seq), "decisions": self.decisions(from_seq),
                "promoted": sum(1 for r in self.records if r.promoted_version and
                                r.role == "update" and r.seq >= from_seq),
                "train_cpu_seconds": round(self.train_cpu(from_seq), 2)}


def simulate(cfg: GreenloopConfig, batches: list[Batch], schema: Schema,
             policy: Policy | None = None,
             on_step: Callable[[StepInput, StepOutcome], None] | None = None) -> Simulation:
    """Every batch through `step`, the champion advancing as the pipeline's would."""
    policy = policy or make_policy(cfg.policy)
    sim, champion, history, update_index = Simulation(), Champion(), [], 0
    versions = 0  # the registry numbers every candidate, promoted or not
    refused = 0  # full retrains whose candidate was not promoted (window.after_refusals)
    for batch in batches:
        inp = StepInput(batch, list(history), champion, update_index,
                        refused_retrains=lambda n=refused: n)
        cpu0 = cpu_seconds()
        out = step(inp, cfg, schema, policy)
        train_cpu = cpu_seconds() - cpu0 if out.candidate is not None else 0.0
        versions += out.candidate is not None
        after = advance(champion, inp, out, versions)
        promoted = after.version if after is not champion else None
        role = "bootstrap" if champion.model is None else "update"
        sim.records.append(BatchRecord(batch.seq, role, out.decision.action, out.quality_before,
                                       labelled_rows(batch, cfg), promoted, train_cpu))
        if on_step is not None:
            on_step(inp, out)
        update_index += role == "update"
        refused += (role == "update" and out.decision.action == "retrain"
                    and out.candidate is not None and promoted is None)
        champion = after
        history.append(batch)
    return sim


__all__ = ["BatchRecord", "Simulation", "cpu_seconds", "load_stream", "simulate"]
