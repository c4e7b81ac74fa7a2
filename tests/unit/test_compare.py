"""Ratios and per-batch curves of `compare`, on a small hand-made ledger and summaries."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from greenloop.compare import (
    EnergyRow,
    attribute_energy,
    batch_curve,
    cheapest_within,
    compare_runs,
    curve_records,
    hindsight_choice,
    iso_quality,
    mean_spread,
    mean_summary,
    naive_prequential,
    overhead_share,
    pareto_frontier,
    ratios,
    read_energy_rows,
    seconds_per_batch,
    window_summary,
    within_tolerance,
)
from greenloop.ledger import BatchRow, Ledger
from greenloop.policy import parse_variant, periodic_variants, variant_name


def summary(total: float, train: float, cpu: float, wall: float, q: float,
            batches: int = 10) -> dict:
    return {"dataset": "d", "policy": "p", "metric": "accuracy", "prequential": q,
            "batches": batches, "wall_seconds": wall, "emissions_kg": total * 0.5,
            "energy_kwh": {"total": total, "train": train, "ingest": 0.0},
            "cpu_seconds": {"total": cpu, "train": cpu / 2},
            "decisions": {"skip": 5, "finetune": 3, "retrain": 2}}


def test_ratios_against_the_baseline() -> None:
    base = summary(total=2.0, train=1.6, cpu=100.0, wall=50.0, q=0.75)
    mine = summary(total=0.5, train=0.2, cpu=20.0, wall=25.0, q=0.78)
    r = ratios(mine, base)
    assert r["energy_total"] == pytest.approx(0.25)
    assert r["energy_train"] == pytest.approx(0.125)
    assert r["cpu_seconds"] == pytest.approx(0.2)
    assert r["wall_seconds"] == pytest.approx(0.5)
    assert r["quality_delta"] == pytest.approx(0.03)
    assert r["quality_relative"] == pytest.approx(0.78 / 0.75 - 1)
    assert overhead_share(mine) == pytest.approx(1 - 0.2 / 0.5)
    assert seconds_per_batch(mine) == pytest.approx(2.5)


def test_zero_baseline_training_gives_nan_not_an_error() -> None:
    base = summary(total=1.0, train=0.0, cpu=1.0, wall=1.0, q=0.5)
    assert math.isnan(ratios(base, base)["energy_train"])


def test_seeds_pair_with_the_same_seed_of_the_baseline() -> None:
    runs = {"periodic": [summary(2.0, 1.5, 10, 10, 0.70), summary(4.0, 3.0, 20, 20, 0.80)],
            "gated": [summary(1.0, 0.5, 5, 5, 0.71), summary(1.0, 0.5, 5, 5, 0.79)]}
    out = compare_runs(runs, "periodic")
    # seed 0: 1/2, seed 1: 1/4 -> mean 0.375, sample std of (0.5, 0.25)
    assert out["ratios"]["gated"]["energy_total"] == pytest.approx(0.375)
    assert out["spread"]["gated"]["energy_total"] == pytest.approx(math.sqrt(2) * 0.125)
    assert out["ratios"]["gated"]["quality_delta"] == pytest.approx(0.0)
    assert out["ratios"]["periodic"]["energy_total"] == pytest.approx(1.0)
    assert out["spread"]["periodic"]["energy_total"] == pytest.approx(0.0)
    merged = mean_summary(runs["periodic"])
    assert merged["energy_kwh"]["total"] == pytest.approx(3.0)
    assert merged["prequential"] == pytest.approx(0.75)
    assert merged["seeds"] == 2


def test_compare_needs_the_baseline() -> None:
    with pytest.raises(ValueError, match="baseline"):
        compare_runs({"gated": [summary(1, 1, 1, 1, 0.5)]})


def test_mean_spread_ignores_nan() -> None:
    assert mean_spread([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert all(math.isnan(v) for v in mean_spread([float("nan")]))


def _row(seq: int, role: str, decision: str, rows: int, q: float | None) -> BatchRow:
    return BatchRow("m", f"h{seq}", seq, "processed", role, f"a/{seq}", rows, decision, q, None)


LEDGER_ROWS = [  # (id, hash, phase, kWh): ingest rows carry no hash; "run" is the whole replay
    (1, None, "ingest", 1.0), (2, "h1", "overhead", 0.5),
    (3, None, "ingest", 1.0), (4, "h2", "train", 10.0), (5, "h2", "evaluate", 1.0),
    (6, "h2", "overhead", 0.5),
    (7, None, "ingest", 1.0), (8, "h3", "evaluate", 0.25), (9, "h3", "drift", 0.25),
    (10, "h3", "overhead", 0.5),
    (11, None, "ingest", 1.0), (12, "h4", "evaluate", 0.25), (13, "h4", "drift", 0.25),
    (14, "h4", "train", 2.0), (15, "h4", "overhead", 0.5), (16, None, "run", 100.0),
]


def energy_rows() -> list[EnergyRow]:
    return [EnergyRow(i, h, p, e, cpu_seconds=e, wall_seconds=2 * e) for i, h, p, e in LEDGER_ROWS]


def test_ingest_energy_goes_to_the_next_batch_and_the_run_row_to_none() -> None:
    per = attribute_energy(reversed(energy_rows()))  # order comes from the ids, not the input
    assert per["h1"]["energy_kwh"] == pytest.approx(1.5)
    assert per["h2"]["energy_kwh"] == pytest.approx(12.5)
    assert per["h2"]["train_energy_kwh"] == pytest.approx(10.0)
    assert per["h4"]["wall_seconds"] == pytest.approx(8.0)
    assert sum(v["energy_kwh"] for v in per.values()) == pytest.approx(
        sum(e for _, _, p, e in LEDGER_ROWS if p != "run"))


def test_batch_curve_is_prequential_and_cumulative() -> None:
    batches = [_row(2, "bootstrap", "retrain", 100, None), _row(1, "bootstrap", "skip", 100, None),
               _row(3, "update", "skip", 100, 0.9), _row(4, "update", "retrain", 300, 0.5)]
    pts = batch_curve(batches, energy_rows())
    assert [p.seq for p in pts] == [1, 2, 3, 4]
    assert math.isnan(pts[0].quality) and math.isnan(pts[1].prequential)
    assert pts[2].prequential == pytest.approx(0.9)
    assert pts[3].prequential == pytest.approx((0.9 * 100 + 0.5 * 300) / 400)  # row-weighted
    assert [p.cumulative_energy_kwh for p in pts] == pytest.approx([1.5, 14.0, 16.0, 20.0])
    assert pts[-1].cumulative_train_energy_kwh == pytest.approx(12.0)


def test_read_energy_rows_from_a_real_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    reading = {"energy_kwh": 1e-6, "emissions_kg": 1e-7, "cpu_seconds": 0.1, "wall_seconds": 0.2}
    ledger.add_energy("m", None, "ingest", reading)
    ledger.add_energy("m", "abc", "train", reading, "retrain")
    ledger.add_energy("other", "abc", "train", reading, "retrain")
    ledger.close()
    rows = read_energy_rows(tmp_path / "ledger.sqlite", "m")
    assert [(r.hash, r.phase) for r in rows] == [(None, "ingest"), ("abc", "train")]
    assert rows[1].energy_kwh == pytest.approx(1e-6)


# -- iso-quality selection ----------------------------------------------------------------
def test_tolerance_is_half_a_point_of_accuracy_or_two_percent_of_mae() -> None:
    assert within_tolerance("classification", 0.7951, 0.80)
    assert within_tolerance("classification", 0.795, 0.80)
    assert not within_tolerance("classification", 0.7949, 0.80)
    assert within_tolerance("regression", 51.0, 50.0)  # MAE: lower is better
    assert within_tolerance("regression", 40.0, 50.0)
    assert not within_tolerance("regression", 51.01, 50.0)
    assert not within_tolerance("classification", float("nan"), 0.8)


def test_cheapest_variant_within_tolerance_classification() -> None:
    variants = {"periodic-e1-wall": (0.800, 100.0), "periodic-e4-w8": (0.797, 20.0),
                "periodic-e8-w4": (0.780, 5.0), "periodic-e2-w8": (0.810, 40.0)}
    # 0.797 >= 0.80 - 0.005: the cheapest qualifying one, not the cheapest overall (0.780)
    assert cheapest_within("classification", 0.800, variants) == "periodic-e4-w8"
    assert cheapest_within("classification", 0.809, variants) == "periodic-e2-w8"
    assert cheapest_within("classification", 0.82, variants) is None


def test_cheapest_variant_within_tolerance_regression() -> None:
    variants = {"a": (50.0, 100.0), "b": (51.5, 30.0), "c": (60.0, 1.0)}
    assert cheapest_within("regression", 50.0, variants) == "a"  # 51.5 > 50 * 1.02
    assert cheapest_within("regression", 51.0, variants) == "b"  # 51.5 <= 52.02
    assert cheapest_within("regression", 60.0, variants) == "c"


def test_frontier_keeps_only_undominated_variants() -> None:
    variants = {"cheap-bad": (0.70, 1.0), "mid": (0.78, 10.0), "dominated": (0.77, 20.0),
                "best": (0.80, 100.0), "tie-costlier": (0.80, 120.0)}
    assert pareto_frontier("classification", variants) == ["cheap-bad", "mid", "best"]
    mae = {"a": (50.0, 100.0), "b": (55.0, 10.0), "c": (56.0, 50.0)}
    assert pareto_frontier("regression", mae) == ["b", "a"]


def test_iso_quality_ratio_is_against_the_cheapest_metered_match() -> None:
    gated = [summary(total=1.0, train=0.2, cpu=10, wall=5, q=0.79)]
    variants = {"periodic-e1-wall": [summary(10.0, 9.0, 100, 50, 0.79)],
                "periodic-e4-w8": [summary(2.5, 2.0, 25, 10, 0.787)],
                "periodic-e8-w4": [summary(0.5, 0.4, 5, 3, 0.70)]}
    iso = iso_quality("classification", gated, variants)
    assert iso is not None and iso["baseline"] == "periodic-e4-w8"
    assert iso["energy_total"] == pytest.approx(0.4)
    assert iso["quality_delta"] == pytest.approx(0.79 - 0.787)
    assert iso["beats_every_variant"] is False
    # Better than every variant by more than 0.5 points: against the best one, flagged.
    beats = iso_quality("classification", [summary(1, 1, 1, 1, q=0.9)], variants)
    assert beats is not None and beats["beats_every_variant"] is True
    assert beats["baseline"] == "periodic-e1-wall" and beats["energy_total"] == pytest.approx(0.1)
    assert iso_quality("classification", [summary(1, 1, 1, 1, q=0.9)], {}) is None


def test_variant_names_round_trip() -> None:
    names = list(periodic_variants())
    assert len(names) == 16 and "periodic-e1-wall" in names and "periodic-e8-w16" in names
    assert all(variant_name(*parse_variant(n)) == n for n in names)
    assert parse_variant("periodic-e4-wall") == (4, None)
    for bad in ("periodic", "periodic-4-8", "periodic-e0-w8", "gated-e1-wall", "periodic-ex-w8"):
        with pytest.raises(ValueError, match="periodic"):
            parse_variant(bad)


def test_window_summary_counts_only_batches_from_k() -> None:
    batches = [_row(1, "bootstrap", "skip", 100, None), _row(2, "bootstrap", "retrain", 100, None),
               _row(3, "update", "skip", 100, 0.9), _row(4, "update", "retrain", 300, 0.5)]
    curve = curve_records(batch_curve(batches, energy_rows()))
    whole = summary(total=100.0, train=12.0, cpu=100.0, wall=200.0, q=0.6)
    w = window_summary(whole, curve, from_seq=4)
    assert w["prequential"] == pytest.approx(0.5) and w["batches"] == 1
    assert w["energy_kwh"] == {"total": pytest.approx(4.0), "train": pytest.approx(2.0)}
    assert w["decisions"] == {"skip": 0, "finetune": 0, "retrain": 1}
    assert window_summary(whole, curve, 3)["prequential"] == pytest.approx(0.6)


# -- naive: previous batch's majority class or mean ----------------------------------------
class _B:
    def __init__(self, seq: int, y: list) -> None:
        self.seq, self.frame = seq, pd.DataFrame({"x": range(len(y)), "y": y})


def test_naive_classification_by_hand() -> None:
    stream = [_B(1, ["a", "a", "b"]), _B(2, ["b", "b", "a", "b"]),
              _B(3, [None, None]),  # no labels: scores nothing, keeps the guess "b"
              _B(4, ["b", "a", None])]
    # batch 2 guessed "a": 1 of 4; batch 4 guessed "b" (from batch 2): 1 of 2 labelled
    assert naive_prequential("classification", "y", stream) == pytest.approx(2 / 6)
    assert naive_prequential("classification", "y", stream, from_seq=3) == pytest.approx(1 / 2)
    assert math.isnan(naive_prequential("classification", "y", stream[:1]))


def test_naive_regression_by_hand() -> None:
    stream = [_B(1, [1.0, 3.0]), _B(2, [2.0, float("nan"), 6.0]), _B(3, [4.0])]
    # batch 2 predicted 2.0: |0| + |4| over 2 labelled rows; batch 3 predicted mean(2, 6) = 4
    assert naive_prequential("regression", "y", stream) == pytest.approx((0 + 4 + 0) / 3)


def test_naive_ties_go_to_the_smallest_label() -> None:
    stream = [_B(1, ["z", "a"]), _B(2, ["a", "z", "z"])]
    assert naive_prequential("classification", "y", stream) == pytest.approx(1 / 3)


def test_unmetered_matches_asks_for_a_cheaper_variant_when_the_metered_match_fell_out() -> None:
    from greenloop.compare import unmetered_matches

    # gated's metered mean is 0.7964; the screened pick e4-w4 (0.7938 on one seed) metered
    # at 0.7893 over three seeds: outside 0.5 points, so only all history is within.
    metered = {"periodic-e1-wall": (0.8043, 10_000_000.0), "periodic-e4-w4": (0.7893, 396_480.0)}
    screened = {"periodic-e1-wall": (0.8023, 10_000_000.0), "periodic-e4-w4": (0.7938, 396_480.0),
                "periodic-e8-w16": (0.7970, 596_790.0), "periodic-e2-w4": (0.7975, 789_750.0),
                "periodic-e8-w4": (0.7780, 175_800.0), "periodic-e4-wall": (0.8055, 2_527_620.0)}
    got = unmetered_matches("classification", {"gated": 0.7964}, metered, screened)
    assert got == ["periodic-e8-w16"]  # the cheapest within tolerance, not yet metered
    metered["periodic-e8-w16"] = (0.7950, 596_790.0)  # metered, and within: done
    assert unmetered_matches("classification", {"gated": 0.7964}, metered, screened) == []
    # MAE: within +2%; a cheaper unmetered one at +1% is asked for
    mae = unmetered_matches("regression", {"gated": 50.0}, {"periodic-e1-wall": (49.0, 9e6)},
                            {"periodic-e2-wall": (50.5, 4e6), "periodic-e8-w4": (60.0, 1e5)})
    assert mae == ["periodic-e2-wall"]
    # Better than every screened variant: the best of them is asked for, once metered no more.
    best = unmetered_matches("classification", {"gated": 0.83}, metered, screened)
    assert best == ["periodic-e4-wall"]
    metered["periodic-e4-wall"] = (0.8050, 2_527_620.0)
    assert unmetered_matches("classification", {"gated": 0.83}, metered, screened) == []


def test_hindsight_picks_the_cheapest_metered_run_near_the_best_quality_seen() -> None:
    metered = {"gated": (0.800, 3.0), "periodic-e1-wall": (0.803, 20.0),
               "periodic-e8-w16": (0.797, 2.0), "never": (0.748, 0.5)}
    # The best is only screened (0.806): within 0.5 points of it are 0.803 only.
    out = hindsight_choice("classification", metered, {"periodic-e4-wall": 0.806})
    assert out == {"choice": "periodic-e1-wall", "quality": 0.803, "energy_kwh": 20.0,
                   "best": "periodic-e4-wall", "best_quality": 0.806}
    # Without it the best is 0.803: gated (0.800) is within 0.5 points and cheaper.
    out = hindsight_choice("classification", metered, {})
    assert out is not None and out["choice"] == "gated" and out["best"] == "periodic-e1-wall"
    # MAE: lower is better, 2% of the best.
    mae = {"gated": (48.75, 0.20), "periodic-e1-wall": (48.28, 0.35), "finetune": (89.1, 0.02)}
    out = hindsight_choice("regression", mae, {"periodic-e2-wall": 48.86})
    assert out is not None and out["choice"] == "gated" and out["best_quality"] == 48.28
    # A NaN quality is never best; nothing metered: no pick.
    assert hindsight_choice("classification", {}, {"periodic-e1-w4": 0.9}) is None
    assert hindsight_choice("classification", {"gated": (math.nan, 1.0)}, {}) is None
