"""Data drift with Evidently, using a fixed test and threshold from the config.

The per-column decision uses Evidently's own registered statistical tests (the same
implementations its DataDriftPreset runs) called directly: about a millisecond per
column instead of ~0.4 s for a full Report, which matters on every quiet batch. For
the Wasserstein (normed) and KS tests on numeric columns even that per-column call is
too slow on wide tables (0.4 s for 500 columns): the same values are computed for all
columns at once with numpy (tests/unit/test_drift_vectorised.py checks them against
Evidently's). The full HTML report is rendered only when a decision needs explaining.

Evidently is imported lazily (about 4 s): commands that never check drift stay fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from greenloop.columnar import float_columns
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

    def top_scores(self, limit: int) -> dict[str, float]:
        """The scores of the `limit` most drifted columns: the drifted ones first, then
        the rest by how far their score leans towards drift. A run that logs one metric
        per column pays per column (MLflow: ~0.2 ms each, 0.11 s a batch at 500 columns)
        and a 500-metric run is unreadable in the UI; the share, the count and every
        drifted column's name are logged beside these."""
        test = self.method.split("/")[0]
        sign = -1.0 if test in DISTANCE_TESTS else 1.0  # p-values: smaller = more drift
        drifted = set(self.drifted)
        ranked = sorted(self.scores, key=lambda c: (c not in drifted, sign * self.scores[c]))
        return {c: self.scores[c] for c in ranked[:limit]}


VECTORISED_METHODS = ("wasserstein", "ks")
# Evidently tests whose score is a distance (bigger = more drift); the others return a
# p-value (smaller = more drift).
DISTANCE_TESTS = frozenset({"wasserstein", "psi", "kl_div", "jensenshannon", "hellinger",
                            "TVD", "ed"})


@dataclass(frozen=True)
class Reference:
    """A reference window prepared for the vectorised numeric tests. The window changes
    only when the champion does, while every batch is tested against it: its numeric
    block, sorted (Wasserstein) and its spread are computed once, not per batch (on a
    500-column stream, most of a quiet batch's drift check)."""

    frame: pd.DataFrame
    block: np.ndarray | None = None  # features x rows, NaN where missing
    n: np.ndarray | None = None  # values per feature
    sorted_block: np.ndarray | None = None  # each row sorted, NaN last (Wasserstein)
    std: np.ndarray | None = None  # population std per feature (Wasserstein's norm)


def prepare_reference(frame: pd.DataFrame, schema: Schema, cfg: DriftConfig) -> Reference:
    numeric = list(schema.numeric)
    if cfg.method not in VECTORISED_METHODS or not numeric:
        return Reference(frame)
    return _prepared(frame, _float_block(frame, numeric), cfg.method)


def _prepared(frame: pd.DataFrame, block: np.ndarray, method: str) -> Reference:
    n = (~np.isnan(block)).sum(axis=1)
    if method == "wasserstein":
        return Reference(frame, block, n, np.sort(block, axis=1), _population_std(block, n))
    return Reference(frame, block, n)


def detect(reference: pd.DataFrame | Reference, current: pd.DataFrame, schema: Schema,
           cfg: DriftConfig) -> DriftResult:
    """Per-feature drift of `current` against `reference` (a frame, or one prepared by
    `prepare_reference` with the same schema and config); share = drifted / tested.

    A column with no value on either side is not tested. Numeric columns under the
    Wasserstein (normed) or KS test are computed all at once (`numeric_drift`, the same
    values as Evidently's per-column call); other tests and categorical columns call
    Evidently's registered test column by column.
    """
    ref = reference if isinstance(reference, Reference) \
        else prepare_reference(reference, schema, cfg)
    reference = ref.frame
    numeric = list(schema.numeric)
    per_column = list(schema.categorical)
    scores: dict[str, float] = {}
    flags: dict[str, bool] = {}
    if cfg.method in VECTORISED_METHODS and numeric:
        score, drifted, tested = _numeric_drift(ref, _float_block(current, numeric),
                                                cfg.method, cfg.threshold)
        for col, s, d, t in zip(numeric, score, drifted, tested, strict=True):
            if t:
                scores[col], flags[col] = float(s), bool(d)
    else:
        per_column = numeric + per_column
    is_numeric = set(numeric)
    for col in per_column:
        method = cfg.method if col in is_numeric else cfg.categorical_method
        outcome = evidently_column_drift(reference[col], current[col], col in is_numeric,
                                         method, cfg.threshold)
        if outcome is not None:
            scores[col], flags[col] = outcome
    drifted_cols = [c for c in schema.features if flags.get(c)]
    share = len(drifted_cols) / len(scores) if scores else 0.0
    label = f"{cfg.method}/{cfg.categorical_method}@{cfg.threshold}"
    return DriftResult(share=share, drifted=drifted_cols, scores=scores, method=label)


def evidently_column_drift(reference: pd.Series, current: pd.Series, is_numeric: bool,
                           method: str, threshold: float) -> tuple[float, bool] | None:
    """Evidently's own registered test on one column (missing values dropped, as its
    reports do); None when either side has no value."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    ref, cur = reference.dropna(), current.dropna()
    if ref.empty or cur.empty:
        return None
    ctype = ColumnType.Numerical if is_numeric else ColumnType.Categorical
    test = get_stattest(ref, cur, ctype, method)
    result = test(ref, cur, ctype, threshold)
    return float(result.drift_score), bool(result.drifted)


def _float_block(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Columns as rows (one contiguous row per feature), float64, NaN where missing."""
    return np.ascontiguousarray(float_columns(frame, columns).T)


def numeric_drift(reference: np.ndarray, current: np.ndarray, method: str,
                  threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evidently's numeric test on every feature at once.

    `reference` (features x reference rows) and `current` (features x current rows),
    NaN = missing (dropped per feature, as Evidently does). Returns the drift score,
    the drifted flag and whether the feature was tested (a value on both sides).
    Semantics are Evidently 0.7.23's: `wasserstein` is scipy's first Wasserstein
    distance divided by max(population std of the reference, 0.001), drifted when
    >= threshold; `ks` is scipy's two-sided `ks_2samp` p-value (method 'auto'),
    drifted when <= threshold.
    """
    return _numeric_drift(_prepared(pd.DataFrame(), reference, method), current, method,
                          threshold)


def _numeric_drift(ref: Reference, current: np.ndarray, method: str,
                   threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert ref.block is not None and ref.n is not None
    n_ref = ref.n
    n_cur = (~np.isnan(current)).sum(axis=1)
    tested = (n_ref > 0) & (n_cur > 0)
    if method == "wasserstein":
        assert ref.sorted_block is not None and ref.std is not None
        distance = _wasserstein_by_quantiles(ref.sorted_block, current, n_ref, n_cur, tested)
        norm = np.maximum(ref.std, 0.001)  # Evidently's norm
        score = np.where(tested, distance / norm, np.nan)
        drifted = score >= threshold
    elif method == "ks":
        score = _ks_pvalues(_pooled_ecdf_counts(ref.block, current), n_ref, n_cur, tested)
        drifted = score <= threshold
    else:
        raise ValueError(f"no vectorised drift test {method!r}; use one of {VECTORISED_METHODS}")
    return score, drifted & tested, tested


def _wasserstein_by_quantiles(ref_sorted: np.ndarray, current: np.ndarray, n_ref: np.ndarray,
                              n_cur: np.ndarray, tested: np.ndarray) -> np.ndarray:
    """scipy's first Wasserstein distance, as the integral over u in (0, 1] of
    |F_ref^-1(u) - F_cur^-1(u)|: the same number as the integral of |F_ref - F_cur| over
    x, but each side is sorted on its own (no argsort of the pooled values, ~2.5x
    faster at 500 columns x 1800 rows). Both quantile functions are constant between
    the points i/n_ref and j/n_cur, so the integral is a weighted sum over that grid,
    shared by every feature with the same counts (all of them when nothing is missing)."""
    # `ref_sorted`: each row sorted, NaN last: the first n_ref[i] are the values.
    cur_sorted = np.sort(current, axis=1)
    out = np.full(len(n_ref), np.nan)
    counts = np.stack([n_ref, n_cur], axis=1)
    for n, m in np.unique(counts[tested], axis=0):
        rows = np.flatnonzero(tested & (n_ref == n) & (n_cur == m))
        everyone = len(rows) == len(n_ref)
        ref_part = ref_sorted if everyone else ref_sorted[rows]
        cur_part = cur_sorted if everyone else cur_sorted[rows]
        widths, ref_at, cur_at = _quantile_grid(int(n), int(m))
        gaps = cur_part[:, cur_at]
        # Where the grid is the reference's own points, no gather (and no copy) needed.
        same = len(ref_at) == ref_part.shape[1] and ref_at[-1] == len(ref_at) - 1
        np.subtract(ref_part if same else ref_part[:, ref_at], gaps, out=gaps)
        np.abs(gaps, out=gaps)
        out[rows] = np.einsum("ij,j->i", gaps, widths)  # not `@`: BLAS would spin threads
    return out


def _quantile_grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On the scale n*m, the union of the points i*m (i = 1..n) and j*n (j = 1..m);
    per interval ending at such a point p: its width in u, and the index of each side's
    sorted value there (ceil(p / m) - 1 and ceil(p / n) - 1). Integers: no rounding."""
    points = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m,
                        np.arange(1, m + 1, dtype=np.int64) * n)
    widths = np.diff(points, prepend=0) / (n * m)
    return widths, -(-points // m) - 1, -(-points // n) - 1


def _population_std(values: np.ndarray, n: np.ndarray) -> np.ndarray:
    """np.nanstd per row (ddof 0), 0 where a row has no value; ~3x faster than nanstd."""
    valid = ~np.isnan(values)
    centred = np.where(valid, values, 0.0)
    mean = centred.sum(axis=1) / np.maximum(n, 1)
    np.subtract(centred, mean[:, None], out=centred)
    centred[~valid] = 0.0
    return np.sqrt(np.einsum("ij,ij->i", centred, centred) / np.maximum(n, 1))


@dataclass(frozen=True)
class _PooledCounts:
    """Reference and current values of each feature sorted together (NaN last), with
    how many of each side lie at or before every position."""

    values: np.ndarray
    ref_count: np.ndarray
    cur_count: np.ndarray
    valid: np.ndarray


def _pooled_ecdf_counts(reference: np.ndarray, current: np.ndarray) -> _PooledCounts:
    pooled = np.concatenate([reference, current], axis=1)
    from_ref = np.zeros(pooled.shape[1], dtype=bool)
    from_ref[: reference.shape[1]] = True
    # Not a stable sort (5x faster): the order inside a run of equal values changes
    # neither test, as both read the counts only where the value changes.
    order = np.argsort(pooled, axis=1)  # NaN sorts last
    values = np.take_along_axis(pooled, order, axis=1)
    valid = ~np.isnan(values)
    ref_count = np.cumsum(from_ref[order], axis=1)
    # NaN come last, so every valid position has only valid values at or before it.
    cur_count = np.arange(1, pooled.shape[1] + 1) - ref_count
    return _PooledCounts(values, ref_count, cur_count, valid)


def _ks_pvalues(c: _PooledCounts, n_ref: np.ndarray, n_cur: np.ndarray,
                tested: np.ndarray) -> np.ndarray:
    """The KS statistic in exact integer form, h = max |c_ref * n_cur - c_cur * n_ref|
    over the ends of runs of equal values, then scipy's p-value for (n_ref, n_cur, h)."""
    run_end = c.valid.copy()
    run_end[:, :-1] &= c.values[:, :-1] != c.values[:, 1:]
    gap = np.abs(c.ref_count * n_cur[:, None] - c.cur_count * n_ref[:, None])
    h_scaled = np.max(np.where(run_end, gap, 0), axis=1)
    out = np.full(len(n_ref), np.nan)
    cache: dict[tuple[int, int, int], float] = {}
    for i in np.flatnonzero(tested):  # one scalar per distinct (n1, n2, h): cached
        key = (int(n_ref[i]), int(n_cur[i]), int(h_scaled[i]))
        if key not in cache:
            cache[key] = _ks_2samp_pvalue(*key)
        out[i] = cache[key]
    return out


def _ks_2samp_pvalue(n1: int, n2: int, h_scaled: int) -> float:
    """scipy.stats.ks_2samp's two-sided p-value (method 'auto') for a statistic
    d = h_scaled / (n1 * n2): exact up to 10,000 rows a side, Smirnov's asymptotic
    formula beyond or when the exact count fails, as scipy does."""
    from scipy.stats import kstwo
    from scipy.stats._stats_py import _attempt_exact_2kssamp  # scipy's own exact count

    g = math.gcd(n1, n2)
    h = h_scaled // g  # in units of 1/lcm(n1, n2), as scipy rounds it
    d = h / ((n1 // g) * n2)
    if max(n1, n2) <= 10_000:
        success, d, prob = _attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
        if success:
            return float(np.clip(prob, 0.0, 1.0))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(np.clip(kstwo.sf(d, np.round(m * n / (m + n))), 0.0, 1.0))


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
