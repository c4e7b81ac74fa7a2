"""Quality metrics, oriented so that higher is always better for comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from greenloop.data import label_mask
from greenloop.model import TabularModel


def metric_name(task: str) -> str:
    return "accuracy" if task == "classification" else "mae"


def score(task: str, y_true: pd.Series, y_pred: np.ndarray) -> float:
    """The task's reported metric: accuracy (higher better) or MAE (lower better)."""
    if task == "classification":
        return float(np.mean(y_true.astype(str).to_numpy() == y_pred.astype(str)))
    return float(np.mean(np.abs(y_true.to_numpy(float) - y_pred.astype(float))))


def quality(task: str, value: float) -> float:
    """Higher-is-better view of a metric value, for drops and comparisons."""
    return value if task == "classification" else -value


def labelled(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rows that carry a label: the only ones scored or trained on."""
    mask = label_mask(frame, target)
    return frame if mask.all() else frame[mask]


def evaluate(model: TabularModel, frame: pd.DataFrame, target: str) -> float:
    """The metric on the labelled rows; NaN when there are none."""
    frame = labelled(frame, target)
    if len(frame) == 0:
        return float("nan")
    return score(model.pre.task, frame[target], model.predict(frame))


def relative_drop(task: str, reference: float, current: float) -> float:
    """How much worse `current` is than `reference`: accuracy points, or MAE relative."""
    if task == "classification":
        return reference - current
    return (current - reference) / max(abs(reference), 1e-9)
