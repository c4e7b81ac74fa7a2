"""The pure steps of one update, on DataFrames: no files, no tracking, no orchestration.

Every accepted batch is split once, deterministically from its content hash, into a
training part and a holdout part. Models train only on training parts; candidates and
the champion are compared on the new batch's holdout (recent quality) and on the
holdouts of the champion's reference window (forgetting check).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from greenloop.calibrate import drop_se, paired_worse, row_losses
from greenloop.config import DriftConfig, GreenloopConfig
from greenloop.data import Schema
from greenloop.drift import DriftResult, Reference, detect, prepare_reference
from greenloop.evaluate import evaluate, labelled, relative_drop, score
from greenloop.model import TabularModel
from greenloop.policy import Action
from greenloop.train import finetune, retrain


@dataclass(frozen=True)
class Batch:
    seq: int
    digest: str
    frame: pd.DataFrame
    holdout_mask: np.ndarray

    # Cached: every fine-tune and evaluation reads the parts of the whole history.
    @cached_property
    def train(self) -> pd.DataFrame:
        return self.frame[~self.holdout_mask]

    @cached_property
    def holdout(self) -> pd.DataFrame:
        return self.frame[self.holdout_mask]


def make_batch(seq: int, digest: str, frame: pd.DataFrame, fraction: float) -> Batch:
    rng = np.random.default_rng(int(digest[:12], 16))
    mask = rng.random(len(frame)) < fraction
    if len(frame) >= 2 and (mask.all() or not mask.any()):
        mask[:] = False
        mask[rng.integers(len(frame))] = True  # a tiny batch still gets one holdout row
    return Batch(seq, digest, frame, mask)


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def training_rows(action: Action, new: Batch, history: Sequence[Batch], cfg: GreenloopConfig,
                  seed: int) -> pd.DataFrame:
    """Retrain: the window (all history by default) plus the new batch. Fine-tune: the new
    batch plus an equal-sized (replay_ratio) sample of the last replay_batches batches."""
    t = cfg.train
    if action == "retrain":
        # Policies differ in when they train and on which rows: `periodic` is the
        # scheduled pipeline, with its own window (all history by default).
        n = cfg.policy.periodic_window_batches if cfg.policy.name == "periodic" \
            else t.retrain_window_batches
        # "auto" without a race (greenloop/window.py) is all history, as before it existed.
        window = history if n is None or n == "auto" else history[-n:]
        return concat([b.train for b in window] + [new.train])
    if action == "finetune":
        pool = concat([b.train for b in history[-t.replay_batches:]]) if t.replay_batches else None
        n_replay = int(round(t.replay_ratio * len(new.train)))
        if pool is None or pool.empty or n_replay == 0:
            return new.train
        replay = pool.sample(n=min(n_replay, len(pool)), random_state=seed)
        return concat([new.train, replay])
    raise ValueError(f"no training rows for action {action!r}")


def train_candidate(action: Action, champion: TabularModel | None, rows: pd.DataFrame,
                    schema: Schema, cfg: GreenloopConfig, seed: int) -> TabularModel:
    if action == "finetune" and champion is not None:
        return finetune(champion, rows, schema.target, cfg.train.finetune, seed)
    if cfg.train.refit_start == "champion" and champion is not None:
        # The same rows and recipe as a full retrain; only the starting weights differ.
        return finetune(champion, rows, schema.target, cfg.train.retrain, seed)
    return retrain(rows, schema, cfg.data.task, cfg.model, cfg.train.retrain, seed)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    candidate_recent: float
    champion_recent: float
    candidate_reference: float
    champion_reference: float
    eval_quality: float  # candidate on recent + reference holdouts: its reference quality

    @property
    def gain(self) -> float:
        return self.candidate_recent - self.champion_recent


def judge(candidate: TabularModel, champion: TabularModel | None, recent: pd.DataFrame,
          reference: pd.DataFrame, cfg: GreenloopConfig) -> Verdict:
    """Promote if the candidate is not worse on recent data and has not forgotten. A
    candidate whose weights, predictions or metrics are not finite is never promoted:
    NaN compares False with every tolerance, so it would otherwise pass every check."""
    task, target, p = cfg.data.task, cfg.data.target, cfg.policy
    both = concat([recent, reference])
    cand_r, cand_f = evaluate(candidate, recent, target), evaluate(candidate, reference, target)
    pooled = evaluate(candidate, both, target)
    broken = not_finite(candidate, {"recent": (recent, cand_r), "reference": (reference, cand_f)},
                        both, target)
    if broken:
        nan = float("nan")
        champ_r = evaluate(champion, recent, target) if champion is not None else nan
        champ_f = evaluate(champion, reference, target) if champion is not None else nan
        return Verdict(False, f"never promoted: {broken}", cand_r, champ_r, cand_f, champ_f,
                       pooled)
    if champion is None:
        return Verdict(True, "first model", cand_r, float("nan"), cand_f, float("nan"), pooled)
    champ_r, champ_f = evaluate(champion, recent, target), evaluate(champion, reference, target)
    worse_recent = relative_drop(task, champ_r, cand_r)
    forgot = relative_drop(task, champ_f, cand_f) if len(reference) else 0.0
    why = refusal(p.promote_tolerance, worse_recent, candidate, champion, recent, cfg)
    if why:
        return Verdict(False, f"candidate worse on recent holdout {why}",
                       cand_r, champ_r, cand_f, champ_f, pooled)
    why = refusal(p.forgetting_tolerance, forgot, candidate, champion, reference, cfg) \
        if len(reference) else None
    moved = present_wins(candidate, champion, recent, cfg) \
        if why and p.forgetting_tolerance is None else None
    if why and not moved:
        return Verdict(False, f"candidate forgot: reference holdout worse {why}",
                       cand_r, champ_r, cand_f, champ_f, pooled)
    note = f"; forgot {why}, but {moved}: the stream has moved" if moved else ""
    return Verdict(True, f"recent {cand_r:.3f} vs {champ_r:.3f}, reference {cand_f:.3f} vs "
                         f"{champ_f:.3f}{note}", cand_r, champ_r, cand_f, champ_f, pooled)


def present_wins(candidate: TabularModel, champion: TabularModel, recent: pd.DataFrame,
                 cfg: GreenloopConfig) -> str | None:
    """Why the candidate's forgetting is overruled, or None: the champion is
    significantly worse than it on the new batch's holdout (the same paired test).

    When the two tests disagree, both significant, the recent batches hold a concept
    the new batch no longer follows (friedman-drift's concept returning, a regime
    ending): keeping the champion would keep the past. Measured on the suite (docs/
    suite.md, twelfth session): the default's quality rose or stayed on every stream."""
    target = cfg.data.target
    test = paired_worse(cfg.data.task, row_losses_of(champion, recent, target),
                        row_losses_of(candidate, recent, target))
    return f"the champion is worse on this batch (paired test: {test.reason})" \
        if test.worse else None


def refusal(tolerance: float | None, drop: float, candidate: TabularModel,
            champion: TabularModel, holdout: pd.DataFrame, cfg: GreenloopConfig) -> str | None:
    """Why the candidate is refused on `holdout`, or None. A fixed tolerance compares the
    drop; None (the default) is a paired test on the same rows: refused only when the
    candidate is significantly worse (greenloop/calibrate.py: paired_worse)."""
    if tolerance is not None:
        return f"by {drop:.3f}" if drop > tolerance else None
    target = cfg.data.target
    test = paired_worse(cfg.data.task, row_losses_of(candidate, holdout, target),
                        row_losses_of(champion, holdout, target))
    return f"(paired test: {test.reason})" if test.worse else None


def row_losses_of(model: TabularModel, frame: pd.DataFrame, target: str) -> np.ndarray:
    """The model's per-row loss on the labelled rows of `frame` (0/1 or absolute error)."""
    rows = labelled(frame, target)
    if len(rows) == 0:
        return np.zeros(0)
    return row_losses(model.pre.task, rows[target], model.predict(rows))


def observe(model: TabularModel, frame: pd.DataFrame,
            target: str) -> tuple[float, np.ndarray]:
    """The model's metric on the labelled rows of `frame` (NaN with none) and its per-row
    losses there, from one forward pass: a skip's observation needs both."""
    rows = labelled(frame, target)
    if len(rows) == 0:
        return float("nan"), np.zeros(0)
    predictions = model.predict(rows)
    return (score(model.pre.task, rows[target], predictions),
            row_losses(model.pre.task, rows[target], predictions))


def quality_se(task: str, losses: np.ndarray, reference_quality: float) -> float:
    """The standard error of the model's quality drop on a batch, in drop units."""
    return drop_se(task, losses, reference_quality) if len(losses) else float("nan")


# The reference window changes only when the champion does: prepared for the drift
# tests once (kept for the last few windows: a 500-column window is a few MB).
_REFERENCE_CACHE: dict[tuple[object, ...], Reference] = {}
_REFERENCE_CACHE_SIZE = 4


def reference_drift(reference: list[Batch], current: pd.DataFrame, schema: Schema,
                    drift_cfg: DriftConfig) -> DriftResult:
    """`detect` of `current` against the reference batches, the window prepared once."""
    prepared = _per_window(_REFERENCE_CACHE, _REFERENCE_CACHE_SIZE, reference, schema,
                           drift_cfg, lambda: prepare_reference(
                               concat([b.frame for b in reference]), schema, drift_cfg))
    return detect(prepared, current, schema, drift_cfg)


def _per_window(cache: dict, size: int, reference: list[Batch], schema: Schema,
                drift_cfg: DriftConfig, make: Callable[[], Any]) -> Any:  # noqa: ANN401
    """What `make` builds for this reference window, built once; the oldest window
    dropped beyond `size`."""
    key = (tuple(b.digest for b in reference), schema, drift_cfg)
    if key not in cache:
        if len(cache) >= size:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    return cache[key]


# Its null is computed once too (as far as it was needed).
_NULL_CACHE: dict[tuple[object, ...], list[float]] = {}
_NULL_CACHE_SIZE = 64


def drift_null(reference: list[Batch], schema: Schema, drift_cfg: DriftConfig,
               enough: float = math.inf) -> tuple[float, ...]:
    """The drift share of each reference batch against the other reference batches: how
    much this stream drifts from batch to batch when nothing unusual happens.

    The null is only ever asked one question: is a batch's share above all of these?
    So they are computed one at a time and no further once one reaches `enough` (the
    share being judged): the answer is then no, whatever the rest are. A quiet batch
    pays one leave-one-out test instead of one per reference batch (0.29 s a promotion
    on a 500-column stream); a batch that drifts beyond them all pays the whole null,
    once per reference window (cached, and resumed where an earlier batch stopped)."""
    if len(reference) < 2:
        return ()
    shares = _per_window(_NULL_CACHE, _NULL_CACHE_SIZE, reference, schema, drift_cfg, list)
    if math.isnan(enough):  # nothing tested in the batch: it drifts beyond nothing
        return tuple(shares)
    while len(shares) < len(reference) and not any(s >= enough for s in shares):
        i = len(shares)
        others = concat([o.frame for j, o in enumerate(reference) if j != i])
        shares.append(detect(others, reference[i].frame, schema, drift_cfg).share)
    return tuple(shares)


def not_finite(model: TabularModel, scored: dict[str, tuple[pd.DataFrame, float]],
               holdouts: pd.DataFrame, target: str) -> str | None:
    """Why `model` is broken (non-finite weights, predictions on `holdouts`, or a NaN
    metric on a part that has labelled rows), or None. NaN on a part without labelled
    rows is legitimate: there is nothing to score."""
    if not all(bool(torch.isfinite(w).all()) for w in model.net.parameters()):
        return "its weights are not finite"
    if len(holdouts):
        if not bool(np.isfinite(raw_outputs(model, holdouts)).all()):
            return f"its predictions on the holdouts are not finite ({len(holdouts)} rows)"
    for part, (frame, value) in scored.items():
        if not np.isfinite(value) and len(labelled(frame, target)):
            return f"its {part} holdout metric is {value}"
    return None


@torch.no_grad()
def raw_outputs(model: TabularModel, frame: pd.DataFrame) -> np.ndarray:
    """What the network outputs, before argmax (classification) or de-scaling
    (regression, whose de-scaled predictions are checked too)."""
    model.net.eval()
    out = model.net(model.pre.features(frame)).numpy().astype(float)
    if model.pre.task != "classification":
        out = np.concatenate([out.ravel(), model.predict(frame).astype(float)])
    return out


def quality_gain(task: str, verdict: Verdict) -> float:
    """Candidate minus champion on the recent holdout, higher-is-better, in drop units."""
    if np.isnan(verdict.champion_recent):
        return 0.0
    return -relative_drop(task, verdict.champion_recent, verdict.candidate_recent)


__all__ = ["Batch", "Verdict", "concat", "drift_null", "judge", "make_batch", "not_finite",
           "observe", "present_wins", "quality_gain", "quality_se", "raw_outputs", "refusal",
           "row_losses_of", "train_candidate", "training_rows"]
