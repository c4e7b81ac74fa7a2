"""The all-columns-at-once drift test gives Evidently's own per-column answer.

Seeded data, 50 numeric columns: no drift, planted shifts of several sizes (so scores
fall on both sides of the threshold), scale changes, constant columns (Evidently norms
by max(std, 0.001)), heavy ties, NaNs, a column missing on one side, and categoricals
that still go through Evidently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenloop.config import DriftConfig
from greenloop.data import Schema
from greenloop.drift import detect, evidently_column_drift

N_COLUMNS = 50


def planted(seed: int, ref_rows: int, cur_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(ref_rows, N_COLUMNS))
    cur = rng.normal(size=(cur_rows, N_COLUMNS))
    cur[:, 0:10] += np.linspace(0.0, 0.5, 10)  # small to large shifts around the threshold
    cur[:, 10:14] *= 3.0  # a change of scale, not of location
    ref[:, 14], cur[:, 14] = 2.5, 2.5  # constant and unchanged
    ref[:, 15], cur[:, 15] = 2.5, 2.5 + rng.normal(scale=1e-3, size=cur_rows)  # constant ref
    ref[:, 16:20] = np.round(ref[:, 16:20])  # many ties
    cur[:, 16:20] = np.round(cur[:, 16:20] + 0.3)
    ref[:, 20:30][rng.random((ref_rows, 10)) < 0.2] = np.nan  # scattered missing values
    cur[:, 25:35][rng.random((cur_rows, 10)) < 0.3] = np.nan
    cur[:, 36] = np.nan  # entirely missing in this batch: not tested
    ref[:, 37] = np.nan  # never seen in the reference: not tested
    cur[:, 38] = np.round(cur[:, 38] * 1e6) * 1e-6 + 1e7  # large offset, fine resolution
    names = [f"n{i}" for i in range(N_COLUMNS)]
    ref_frame, cur_frame = pd.DataFrame(ref, columns=names), pd.DataFrame(cur, columns=names)
    ref_frame["kind"] = rng.choice(["a", "b", "c"], size=ref_rows)
    cur_frame["kind"] = rng.choice(["a", "b", "c"], size=cur_rows, p=[0.6, 0.2, 0.2])
    return ref_frame, cur_frame


SCHEMA = Schema("y", tuple(f"n{i}" for i in range(N_COLUMNS)), ("kind",), ())


def evidently_per_column(ref: pd.DataFrame, cur: pd.DataFrame,
                         cfg: DriftConfig) -> dict[str, tuple[float, bool]]:
    out = {}
    for col in SCHEMA.features:
        is_num = col in SCHEMA.numeric
        method = cfg.method if is_num else cfg.categorical_method
        result = evidently_column_drift(ref[col], cur[col], is_num, method, cfg.threshold)
        if result is not None:
            out[col] = result
    return out


@pytest.mark.parametrize(("method", "threshold", "ref_rows", "cur_rows", "seed"), [
    ("wasserstein", 0.1, 1600, 200, 0),
    ("wasserstein", 0.1, 300, 300, 1),
    ("wasserstein", 0.1, 1597, 211, 6),  # sizes with no common multiple below their product
    ("wasserstein", 0.1, 37, 500, 7),  # a reference smaller than the batch
    ("ks", 0.05, 1600, 200, 2),
    ("ks", 0.05, 240, 240, 3),  # equal sizes: scipy's other exact path
    ("ks", 0.05, 12000, 300, 4),  # over 10,000 rows: scipy's asymptotic p-value
])
def test_vectorised_equals_evidently_per_column(method: str, threshold: float, ref_rows: int,
                                                cur_rows: int, seed: int) -> None:
    ref, cur = planted(seed, ref_rows, cur_rows)
    cfg = DriftConfig(method=method, threshold=threshold, categorical_method="psi")
    expected = evidently_per_column(ref, cur, cfg)
    got = detect(ref, cur, SCHEMA, cfg)

    assert set(got.scores) == set(expected)  # same columns tested (n36, n37 are not)
    assert "n36" not in got.scores and "n37" not in got.scores
    for col, (score, drifted) in expected.items():
        # 1e-9 absolute; a score of ~1e7 (n38) is only resolved to ~2e-9 by float64
        # itself, so a relative 1e-12 bound applies there (summation order differs).
        assert got.scores[col] == pytest.approx(score, abs=1e-9, rel=1e-12), col
        assert (col in got.drifted) == drifted, col
    assert got.drifted == [c for c in SCHEMA.features if c in expected and expected[c][1]]
    assert got.share == pytest.approx(len(got.drifted) / len(expected))
    # the planted data puts columns on both sides of the threshold: the flags were tested
    assert 0 < len(got.drifted) < len(expected)


def test_other_methods_fall_back_to_evidently() -> None:
    ref, cur = planted(5, 400, 200)
    cfg = DriftConfig(method="psi", threshold=0.1, categorical_method="jensenshannon")
    expected = evidently_per_column(ref, cur, cfg)
    got = detect(ref, cur, SCHEMA, cfg)
    assert got.scores == {c: s for c, (s, _) in expected.items()}
    assert got.drifted == [c for c in SCHEMA.features if c in expected and expected[c][1]]


def test_top_scores_keeps_the_most_drifted_columns_first() -> None:
    from greenloop.drift import DriftResult

    distance = DriftResult(share=0.25, drifted=["d"], method="wasserstein/psi@0.1",
                           scores={"a": 0.01, "b": 0.09, "c": 0.05, "d": 0.4})
    assert list(distance.top_scores(3)) == ["d", "b", "c"]  # bigger distance = more drift
    p_values = DriftResult(share=0.25, drifted=["d"], method="ks/chisquare@0.05",
                           scores={"a": 0.9, "b": 0.06, "c": 0.5, "d": 0.01})
    assert list(p_values.top_scores(3)) == ["d", "b", "c"]  # smaller p-value = more drift
    assert p_values.top_scores(10) == p_values.scores  # fewer columns than the limit: all


@pytest.mark.parametrize("method", ["wasserstein", "ks"])
def test_a_reference_prepared_once_gives_the_same_answer_for_every_batch(method: str) -> None:
    from greenloop.drift import prepare_reference

    ref, _ = planted(8, 400, 100)
    cfg = DriftConfig(method=method, threshold=0.1 if method == "wasserstein" else 0.05,
                      categorical_method="psi")
    prepared = prepare_reference(ref, SCHEMA, cfg)
    for seed in (9, 10):  # two batches against the one prepared window
        cur = planted(seed, 400, 100)[1]
        assert detect(prepared, cur, SCHEMA, cfg) == detect(ref, cur, SCHEMA, cfg)


def test_the_step_prepares_a_reference_window_once() -> None:
    from greenloop import steps

    ref, cur = planted(11, 300, 100)
    window = [steps.make_batch(i, f"d{i}", part, 0.2) for i, part in
              enumerate((ref.iloc[:150].reset_index(drop=True),
                         ref.iloc[150:].reset_index(drop=True)))]
    cfg = DriftConfig(method="wasserstein", threshold=0.1, categorical_method="psi")
    first = steps.reference_drift(window, cur, SCHEMA, cfg)
    key = (("d0", "d1"), SCHEMA, cfg)
    prepared = steps._REFERENCE_CACHE[key]
    assert steps.reference_drift(window, cur, SCHEMA, cfg) == first
    assert steps._REFERENCE_CACHE[key] is prepared  # not prepared again
    assert first == detect(steps.concat([b.frame for b in window]), cur, SCHEMA, cfg)
