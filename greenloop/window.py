"""Which rows a full retrain learns from, raced on the stream (`retrain_window_batches:
auto`).

All history is what bikes' and weather's seasons need; the last few batches are what a
stream whose concept moves (Agrawal, hyperplane, LED) rewards. No fixed choice is right
for both (docs/suite.md, twelfth session: the last 8 batches everywhere gained 3-4.5
points on four streams and lost 3 points, or 7-13% of MAE, on five). With `auto` and
calibrated thresholds, a full retrain trains both (the window: the last 8 batches and the
new one) and keeps the window's model only when all history's is significantly worse on
the recent holdout rows (rows neither learned from). The verdict that follows is the
usual one: the winner must still pass the promotion check.

It is opt-in, not the default: on the suite it gained up to 2 points on concept changes
(LED) but cost friedman-drift 9% of MAE (all history fits a returning concept better, the
recent holdouts still hold the one it replaces). `greenloop tune` searches it with the
other windows.

Pure: models and frames in, a model and a sentence out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from greenloop.calibrate import paired_worse
from greenloop.config import GreenloopConfig
from greenloop.data import Schema
from greenloop.model import TabularModel
from greenloop.policy import Action
from greenloop.steps import Batch, concat, row_losses_of, train_candidate, training_rows

# The recent window raced against all history: as many batches as the drift reference
# and the forgetting check look at.
AUTO_WINDOW_BATCHES = 8


@dataclass(frozen=True)
class Trained:
    candidate: TabularModel
    rows: int  # rows trained on, over every model trained (the race trains two)
    row_epochs: int  # rows × epochs early stopping ran, over every model trained
    note: str = ""  # which window won the race, and by how much; "" when no race


def _calibrated_retrain(action: Action, cfg: GreenloopConfig) -> bool:
    """A full retrain whose window the stream may choose: not periodic's (it has its own)
    and not under fixed thresholds (written against all history)."""
    return (action == "retrain" and cfg.policy.name != "periodic"
            and cfg.policy.retrain_quality_drop is None)


def racing(action: Action, history: Sequence[Batch], cfg: GreenloopConfig) -> bool:
    """Race all history against the recent window? Only for a full retrain of a
    calibrating policy left on `auto`, once history is longer than the window."""
    return (_calibrated_retrain(action, cfg) and cfg.train.retrain_window_batches == "auto"
            and len(history) > AUTO_WINDOW_BATCHES)


def after_refusals(action: Action, cfg: GreenloopConfig, refused: int) -> GreenloopConfig:
    """The config a full retrain trains with, after `refused` full retrains whose candidate
    the promotion check turned down (since the bootstrap).

    With calibrated thresholds and the default window (all history), a refused refit on
    all history says the old rows now mislead: the next one trains on the last
    `AUTO_WINDOW_BATCHES` batches instead, and a refused one of those switches back. So
    the window alternates on each refusal and stays where its refits are accepted. That
    costs no extra training, unlike `auto`'s race. On STAGGER, whose rule changes with no
    covariate drift, 12 of the default's 23 candidates were refused before this, most of
    them refits on all history (docs/suite.md, runs 16 and 17). Any other setting is left
    as it was."""
    if (not _calibrated_retrain(action, cfg) or refused % 2 == 0
            or cfg.train.retrain_window_batches is not None):
        return cfg
    train = cfg.train.model_copy(update={"retrain_window_batches": AUTO_WINDOW_BATCHES})
    return cfg.model_copy(update={"train": train})


def window_rows(new: Batch, history: Sequence[Batch], window: int | None) -> pd.DataFrame:
    chosen = history if window is None else history[-window:]
    return concat([b.train for b in chosen] + [new.train])


def train_for(action: Action, champion: TabularModel | None, new: Batch,
              history: Sequence[Batch], schema: Schema, cfg: GreenloopConfig,
              seed: int) -> Trained:
    """The candidate for `action`: one model, or the winner of the window race."""
    if not racing(action, history, cfg):
        rows = training_rows(action, new, history, cfg, seed)
        model = train_candidate(action, champion, rows, schema, cfg, seed)
        return Trained(model, len(rows), model.row_epochs)
    holdout = concat([b.holdout for b in history[-AUTO_WINDOW_BATCHES:]] + [new.holdout])
    target = cfg.data.target
    models, rows = [], 0
    for window in (None, AUTO_WINDOW_BATCHES):
        train_rows = window_rows(new, history, window)
        models.append(train_candidate("retrain", champion, train_rows, schema, cfg, seed))
        rows += len(train_rows)
    all_model, recent_model = models
    # The recent window must win clearly: all history significantly worse on the same
    # rows (the promotion check's paired test). Picking the lower of two noisy means
    # would follow noise on small holdouts, and all history is the choice without a race.
    recent_losses = row_losses_of(recent_model, holdout, target)
    test = paired_worse(cfg.data.task, row_losses_of(all_model, holdout, target),
                        recent_losses)
    recent_wins = test.worse and bool(np.isfinite(recent_losses).all())
    label = f"last {AUTO_WINDOW_BATCHES} batches" if recent_wins else "all history"
    note = (f"trained on {label} (all {len(history) + 1} batches against the last "
            f"{AUTO_WINDOW_BATCHES} on the recent holdouts: all history's {test.reason})")
    return Trained(recent_model if recent_wins else all_model, rows,
                   sum(m.row_epochs for m in models), note)


__all__ = ["AUTO_WINDOW_BATCHES", "Trained", "racing", "train_for", "window_rows"]
