"""Thresholds in a stream's own units of noise: the pure statistics behind the defaults.

A fixed threshold (a 2-point accuracy drop, a drift share of 0.5, a promotion tolerance
of 0) means different things on a 20-row holdout and a 2,000-row one, on 3 features and
on 500. With only the data section of a config, the default policy instead measures:

- a quality drop in standard errors of the batch metric at that batch size
  (accuracy: sqrt(p(1-p)/n); MAE: std of absolute errors / sqrt(n), relative to the
  reference MAE as the drop itself is);
- drift against the reference window's own batch-to-batch variation: each reference
  batch tested against the others gives a null distribution of drift shares, and a new
  batch is drifted only beyond it;
- promotion by a paired test on the holdout rows both models predicted: refused only
  when the candidate is significantly worse (exact McNemar for accuracy, one-sided
  paired t-test on absolute errors for MAE), and never when its predictions are not
  finite.

Nothing here touches a model, a file or a clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# A fine-tune when the drop is beyond ~2 standard errors (about a 1-in-40 false alarm on
# a quiet batch); a full retrain needs a drop twice as large and drift beyond its null.
FINETUNE_SE = 2.0
RETRAIN_SE = 4.0
# The learning curve: a model fitted on n batches gains from a refit once the labelled
# history has grown by this fraction since (a geometric schedule: O(log n) full retrains,
# whose total cost is a constant times the last one's, however long the stream). Measured
# on 7 suite streams (docs/suite.md): 0.5 left four beyond 2 points of periodic, 0.25
# four, 0.1 none beyond 2 points but bikes (MAE +7%), at about half periodic's retrains.
STALE_GROWTH = 0.1
# One-sided level of the paired promotion test: a candidate is refused only when it is
# worse with at most this chance of being a fluke of the holdout.
PROMOTE_ALPHA = 0.05


def row_losses(task: str, y_true: pd.Series, y_pred: np.ndarray) -> np.ndarray:
    """Per-row loss, lower is better: 1.0 for a wrong class, else the absolute error.
    A non-finite regression prediction gives a non-finite loss (never hidden)."""
    if task == "classification":
        return (y_true.astype(str).to_numpy() != np.asarray(y_pred).astype(str)).astype(float)
    if task == "regression":
        return np.abs(y_true.to_numpy(float) - np.asarray(y_pred, dtype=float))
    raise ValueError(f"unknown task {task!r}: expected 'classification' or 'regression'")


def accuracy_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on n rows. The proportion is shrunk toward
    1/2 as (k+1)/(n+2), so a batch scored 100% still has a positive error."""
    if n <= 0:
        return math.nan
    p = (accuracy * n + 1.0) / (n + 2.0)
    return math.sqrt(p * (1.0 - p) / n)


def mae_se(abs_errors: np.ndarray) -> float:
    """Standard error of a mean absolute error: the errors' sample std / sqrt(n)."""
    errors = np.asarray(abs_errors, dtype=float)
    if len(errors) < 2 or not np.isfinite(errors).all():
        return math.nan
    return float(np.std(errors, ddof=1) / math.sqrt(len(errors)))


def drop_se(task: str, losses: np.ndarray, reference_quality: float) -> float:
    """The standard error of a batch's quality drop, in the drop's own units: accuracy
    points, or (MAE) relative to the reference MAE, as `relative_drop` measures it."""
    losses = np.asarray(losses, dtype=float)
    if task == "classification":
        return accuracy_se(1.0 - float(np.mean(losses)), len(losses)) if len(losses) else math.nan
    reference_mae = abs(reference_quality)
    return mae_se(losses) / max(reference_mae, 1e-9)


def stale(seen_batches: int, unseen_batches: int, growth: float = STALE_GROWTH) -> bool:
    """Has the stream grown enough since the model last learned that a refit on all of it
    is worth its cost? `seen_batches` the model learned from, `unseen_batches` since."""
    return seen_batches > 0 and unseen_batches >= growth * seen_batches


def beyond_null(share: float, null_shares: Sequence[float]) -> bool:
    """Drifted: a share above every share the reference batches showed against each
    other (with k reference batches, a quiet batch exceeds them all about 1 time in k+1).
    No null (fewer than two reference batches): never drifted by this rule."""
    finite = [s for s in null_shares if not math.isnan(s)]
    if not finite or math.isnan(share):
        return False
    return share > max(finite)


@dataclass(frozen=True)
class PairedTest:
    worse: bool  # the candidate is significantly worse (or not finite): refuse it
    p_value: float  # one-sided: the chance of a gap this large if the two were equal
    reason: str


def paired_worse(task: str, candidate_losses: np.ndarray, champion_losses: np.ndarray,
                 alpha: float = PROMOTE_ALPHA) -> PairedTest:
    """Is the candidate significantly worse than the champion on the same rows?

    Accuracy: exact one-sided McNemar (binomial on the rows where exactly one is right).
    MAE: one-sided paired t-test on the absolute-error differences (the MAE gap itself).
    A candidate with any non-finite loss is always worse: it must never be promoted.
    """
    cand = np.asarray(candidate_losses, dtype=float)
    champ = np.asarray(champion_losses, dtype=float)
    if cand.shape != champ.shape:
        raise ValueError(f"paired test needs the same rows: {cand.shape} vs {champ.shape}")
    if not np.isfinite(cand).all():
        return PairedTest(True, 0.0, f"{int((~np.isfinite(cand)).sum())} non-finite prediction(s)")
    if len(cand) == 0 or not np.isfinite(champ).all():
        return PairedTest(False, 1.0, "nothing comparable to test on")
    p = _mcnemar_p(cand, champ) if task == "classification" else _paired_t_p(cand - champ)
    gap = float(np.mean(cand) - np.mean(champ))
    what = "error rate" if task == "classification" else "MAE"
    return PairedTest(p < alpha, p, f"{what} {gap:+.4g} on {len(cand)} rows, p={p:.3g}")


def _mcnemar_p(cand: np.ndarray, champ: np.ndarray) -> float:
    from scipy.stats import binom

    only_cand_wrong = int(np.sum((cand > 0) & (champ == 0)))
    only_champ_wrong = int(np.sum((cand == 0) & (champ > 0)))
    discordant = only_cand_wrong + only_champ_wrong
    if discordant == 0:
        return 1.0
    return float(binom.sf(only_cand_wrong - 1, discordant, 0.5))  # P(X >= only_cand_wrong)


def _paired_t_p(diff: np.ndarray) -> float:
    from scipy.stats import ttest_1samp

    if len(diff) < 2 or float(np.std(diff)) == 0.0:
        mean = float(np.mean(diff)) if len(diff) else 0.0
        return 0.0 if mean > 0 and len(diff) >= 2 else 1.0  # identical gap on every row
    return float(ttest_1samp(diff, 0.0, alternative="greater").pvalue)


__all__ = ["FINETUNE_SE", "PROMOTE_ALPHA", "RETRAIN_SE", "PairedTest", "accuracy_se",
           "STALE_GROWTH", "beyond_null", "drop_se", "mae_se", "paired_worse", "row_losses",
           "stale"]
