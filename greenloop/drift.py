"""Data drift with Evidently, using a fixed test and threshold from the config.

The per-column decision uses Evidently's own registered statistical tests (the same
implementations its DataDriftPreset runs) called directly: about a millisecond per
column instead of ~0.4 s for a full Report, which matters on every quiet batch. The
full HTML report is rendered only when a decision needs explaining.

Evidently is imported lazily (about 4 s): commands that never check drift stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from greenloop.config import DriftConfig
from greenloop.data import Schema


@dataclass(frozen=True)
class DriftResult:
    share: float
    drifted: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    method: str = ""

    @property
    def n_drifted(self) -> int:
        return len(self.drifted)


def detect(reference: pd.DataFrame, current: pd.DataFrame, schema: Schema,
           cfg: DriftConfig) -> DriftResult:
    """Per-feature drift of `current` against `reference`; share = drifted / tested."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    scores: dict[str, float] = {}
    drifted: list[str] = []
    tested = 0
    for col in schema.features:
        is_num = col in schema.numeric
        ref, cur = reference[col].dropna(), current[col].dropna()
        if ref.empty or cur.empty:
            continue  # nothing to compare; validation already refused all-NaN batches
        ctype = ColumnType.Numerical if is_num else ColumnType.Categorical
        method = cfg.method if is_num else cfg.categorical_method
        test = get_stattest(ref, cur, ctype, method)
        result = test(ref, cur, ctype, cfg.threshold)
        scores[col] = float(result.drift_score)
        tested += 1
        if bool(result.drifted):
            drifted.append(col)
    share = len(drifted) / tested if tested else 0.0
    label = f"{cfg.method}/{cfg.categorical_method}@{cfg.threshold}"
    return DriftResult(share=share, drifted=drifted, scores=scores, method=label)


def write_report(reference: pd.DataFrame, current: pd.DataFrame, schema: Schema,
                 cfg: DriftConfig, path: Path) -> Path:
    """The full Evidently data-drift report as HTML, same method and threshold."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(schema.numeric),
                                categorical_columns=list(schema.categorical))
    cols = list(schema.features)
    ref = Dataset.from_pandas(reference[cols], data_definition=definition)
    cur = Dataset.from_pandas(current[cols], data_definition=definition)
    preset = DataDriftPreset(num_method=cfg.method, cat_method=cfg.categorical_method,
                             threshold=cfg.threshold)
    snapshot = Report([preset]).run(current_data=cur, reference_data=ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path
