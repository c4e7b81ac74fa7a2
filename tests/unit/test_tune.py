"""`greenloop tune`: knobs chosen on the prefix only (a batch after it cannot be read), the
same budget for both families, and the tuned config written with its provenance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
import yaml

from greenloop.config import GreenloopConfig
from greenloop.data import infer_schema, validate_batch
from greenloop.simulate import BatchRecord, Simulation
from greenloop.steps import Batch, make_batch
from greenloop.tune import (
    TRAIN_KNOBS,
    Screened,
    gated_grid,
    load_prefix,
    policy_points,
    prefix_length,
    prefix_separates,
    prefix_stability,
    screen,
    separation_text,
    spread_pick,
    stability_text,
    tune_stream,
    tuned_yaml,
    with_knobs,
)
from tests.conftest import make_frame

N_BATCHES, PREFIX = 10, 0.5  # K = 5: bootstrap 2 + 3 update batches


class PeekingError(AssertionError):
    pass


class GuardedStream(Sequence[Batch]):
    """The whole stream's length, but reading batch K+1 or later raises (so does iterating
    past K, which goes through __getitem__)."""

    def __init__(self, batches: list[Batch], readable: int) -> None:
        self.batches, self.readable, self.reads = batches, readable, []

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if isinstance(i, slice):
            raise PeekingError("sliced: could reach past the prefix")
        i = range(len(self.batches))[i]
        if i >= self.readable:
            raise PeekingError(f"read batch {i + 1} after the prefix 1..{self.readable}")
        self.reads.append(i + 1)
        return self.batches[i]


def config(**policy: object) -> GreenloopConfig:
    return GreenloopConfig.model_validate({
        "name": "synth",
        "data": {"path": "data/sources/synth/source.csv", "target": "y",
                 "task": "classification", "batch_rows": 80, "bootstrap_batches": 2},
        "model": {"hidden": [8], "seed": 0},
        "train": {"retrain": {"epochs": 2, "lr": 0.01}, "finetune": {"epochs": 1, "lr": 0.01},
                  "replay_batches": 2},
        "drift": {"threshold": 0.25, "reference_batches": 2},
        "policy": {"name": "gated", **policy},
    })


def stream(cfg: GreenloopConfig) -> tuple[list[Batch], object]:
    frames = [make_frame(80, seed=s, shift={"x0": 1.5 * (s >= 6)}, flip=s >= 7)
              for s in range(N_BATCHES)]
    schema = infer_schema(pd.concat(frames, ignore_index=True), cfg.data)
    return [make_batch(i + 1, f"{i + 1:064x}", validate_batch(f, schema, cfg.data), 0.2)
            for i, f in enumerate(frames)], schema


def test_tune_never_reads_a_batch_after_the_prefix() -> None:
    cfg = config()
    batches, schema = stream(cfg)
    k = prefix_length(N_BATCHES, PREFIX)
    guarded = GuardedStream(batches, readable=k)
    result = tune_stream(cfg, guarded, schema, PREFIX, budget=2)
    assert result.prefix_batches == k == 5 and result.total_batches == N_BATCHES
    assert max(guarded.reads) == k and sorted(set(guarded.reads)) == list(range(1, k + 1))
    assert len(result.periodic_runs) == len(result.policy_runs) == 2  # the same budget
    assert result.best_periodic in result.periodic_runs
    for run in [*result.periodic_runs.values(), *result.policy_runs.values()]:
        assert 0.0 <= run.quality <= 1.0  # scored on the prefix's 3 update batches
    # the control: the same guard does catch a read past the prefix
    with pytest.raises(PeekingError, match="batch 6"):
        GuardedStream(batches, readable=k)[k]
    with pytest.raises(PeekingError):
        list(GuardedStream(batches, readable=k))


def test_the_choice_depends_on_the_prefix_only() -> None:
    """A stream whose post-prefix batches are replaced by garbage tunes the same."""
    cfg = config()
    batches, schema = stream(cfg)
    k = prefix_length(N_BATCHES, PREFIX)
    poisoned = batches[:k] + [Batch(b.seq, b.digest, None, None) for b in batches[k:]]  # type: ignore[arg-type]
    a = tune_stream(cfg, batches, schema, PREFIX, budget=2)
    b = tune_stream(cfg, poisoned, schema, PREFIX, budget=2)
    assert a.knobs() == b.knobs()
    assert {n: r.quality for n, r in a.policy_runs.items()} == \
        {n: r.quality for n, r in b.policy_runs.items()}


def test_bad_requests_name_the_problem() -> None:
    cfg = config()
    batches, schema = stream(cfg)
    with pytest.raises(ValueError, match="prefix must be a fraction"):
        tune_stream(cfg, batches, schema, 1.5)
    with pytest.raises(ValueError, match="bootstrap"):
        tune_stream(cfg, batches, schema, 0.2)  # 2 batches: only the bootstrap
    with pytest.raises(ValueError, match="policy is 'periodic'"):
        tune_stream(config(name="periodic"), batches, schema, PREFIX)


def test_budget_spreads_over_each_family() -> None:
    # The calibrated defaults first (all history, the race, 16, 8; then the same windows
    # fine-tuning on any drop), then the 27 fixed points.
    windows = [{}, {"retrain_window_batches": "auto"}, {"retrain_window_batches": 16},
               {"retrain_window_batches": 8}]
    assert len(gated_grid()) == 35 and gated_grid()[:8] == [
        *windows, *({**w, "finetune_drop_se": 0.0} for w in windows)]
    picked = policy_points(5)
    assert picked == gated_grid()[:5]
    # The tuner's budget of 16: all 8 calibrated points and 8 of the fixed grid, spread.
    sixteen = policy_points(16)
    assert sixteen[:8] == gated_grid()[:8] and len(sixteen) == 16
    assert sixteen[8] == gated_grid()[8] and sixteen[-1] == gated_grid()[-1]
    assert spread_pick(list(range(16)), 4) == [0, 5, 10, 15]
    assert spread_pick(list(range(3)), 10) == [0, 1, 2]
    assert spread_pick(list(range(16)), 1) == [0]


def test_tuned_yaml_keeps_data_and_names_the_prefix(tmp_path: Path) -> None:
    cfg = config()
    batches, schema = stream(cfg)
    result = tune_stream(cfg, batches, schema, PREFIX, budget=2)
    original = "# my stream\n# second line\n" + yaml.safe_dump(
        {"name": "synth", "data": cfg.data.model_dump(mode="json"),
         "policy": {"name": "gated", "promote_tolerance": 0.01}}, sort_keys=False)
    text = tuned_yaml(original, result)
    assert text.startswith(f"# tuned by greenloop tune on batches 1..5 (prefix 0.5) of "
                           f"{N_BATCHES}\n")
    assert "# my stream\n# second line\n" in text
    raw = yaml.safe_load(text)
    assert raw["data"] == cfg.data.model_dump(mode="json")
    assert raw["policy"]["promote_tolerance"] == 0.01  # untouched knobs stay
    for key, value in result.knobs().items():
        section = "train" if key in TRAIN_KNOBS else "policy"
        assert raw[section][key] == value
    GreenloopConfig.model_validate(raw)  # still a valid config
    assert tuned_yaml(text, result).count("# tuned by") == 1  # re-tuning: one header
    assert text.count("# prefix stability:") == 1
    assert tuned_yaml(text, result).count("# prefix stability:") == 1


def test_load_prefix_validates_only_the_prefix(tmp_path: Path) -> None:
    cfg = config()
    frames = [make_frame(80, seed=s) for s in range(N_BATCHES)]
    frames[-1]["x0"] = "not a number"  # a broken batch after the prefix is never validated
    source = tmp_path / "source.csv"
    pd.concat(frames, ignore_index=True).to_csv(source, index=False)
    batches, schema, n = load_prefix(cfg, source, PREFIX)
    assert n == N_BATCHES and [b.seq for b in batches] == [1, 2, 3, 4, 5]
    assert "x0" in schema.numeric
    result = tune_stream(cfg, batches, schema, PREFIX, budget=1, total_batches=n)
    assert (result.prefix_batches, result.total_batches) == (5, N_BATCHES)
    with pytest.raises(ValueError, match="only 5 given"):
        tune_stream(cfg, batches, schema, 0.8, total_batches=n)


def test_a_retrain_window_is_a_train_knob() -> None:
    """The policy's window search (as periodic's) lands in the train section."""
    cfg = config()
    tuned = with_knobs(cfg, retrain_window_batches=8, finetune_quality_drop=0.02)
    assert tuned.train.retrain_window_batches == 8
    assert tuned.policy.finetune_quality_drop == 0.02
    assert cfg.train.retrain_window_batches is None  # the original is not modified


def test_halves_split_the_scored_batches_by_count() -> None:
    """Bootstrap batches never count; the middle update batch opens the second half;
    each half is weighted by its labelled rows, as the whole is."""
    sim = Simulation([BatchRecord(1, "bootstrap", "retrain", math.nan, 10, 1),
                      BatchRecord(2, "update", "skip", 0.9, 10, None),
                      BatchRecord(3, "update", "skip", 0.5, 30, None),
                      BatchRecord(4, "update", "skip", 0.2, 10, None),
                      BatchRecord(5, "update", "skip", 0.4, 10, None)])
    first, second = sim.halves()
    assert first == pytest.approx((0.9 * 10 + 0.5 * 30) / 40)
    assert second == pytest.approx(0.3)
    assert sim.halves(from_seq=4) == (pytest.approx(0.2), pytest.approx(0.4))
    assert all(math.isnan(q) for q in sim.halves(from_seq=5))  # one batch: no halves


def test_the_summary_counts_training_cpu_from_the_first_scored_batch() -> None:
    sim = Simulation([BatchRecord(1, "bootstrap", "retrain", math.nan, 10, 1, 5.0),
                      BatchRecord(2, "update", "skip", 0.9, 10, None),
                      BatchRecord(3, "update", "retrain", 0.5, 10, 2, 2.0),
                      BatchRecord(4, "update", "finetune", 0.6, 10, 3, 0.5)])
    assert sim.summary()["train_cpu_seconds"] == pytest.approx(7.5)
    assert sim.summary(from_seq=3)["train_cpu_seconds"] == pytest.approx(2.5)
    assert sim.summary(from_seq=3)["decisions"] == {"skip": 0, "finetune": 1, "retrain": 1}


def screened(halves: dict[str, tuple[float, float]]) -> dict[str, Screened]:
    return {n: Screened(n, (a + b) / 2, 1, 0.0, {}, halves=(a, b)) for n, (a, b) in halves.items()}


def test_prefix_stability_is_the_rank_agreement_of_the_halves() -> None:
    alike = screened({"a": (0.90, 0.80), "b": (0.85, 0.79), "c": (0.70, 0.60),
                      "d": (0.60, 0.50)})
    assert prefix_stability(alike) == pytest.approx(1.0)
    reversed_ = screened({"a": (0.90, 0.50), "b": (0.85, 0.60), "c": (0.70, 0.79),
                          "d": (0.60, 0.80)})
    assert prefix_stability(reversed_) == pytest.approx(-1.0)
    assert "rank differently" in stability_text(prefix_stability(reversed_))
    assert "rank alike" in stability_text(prefix_stability(alike))
    # a tie shares its mean rank (b and c on the first half): Spearman of [4,2.5,2.5,1]
    # against [4,3,2,1]
    tied = screened({"a": (0.9, 0.9), "b": (0.8, 0.8), "c": (0.8, 0.7), "d": (0.6, 0.6)})
    assert prefix_stability(tied) == pytest.approx(0.9486833, abs=1e-6)
    # too few variants scored on both halves, or no ranking on one half: not measured
    nan_half = screened({"a": (0.9, math.nan), "b": (0.8, 0.8), "c": (0.7, 0.7),
                         "d": (0.6, 0.6)})
    assert math.isnan(prefix_stability(nan_half))
    flat = screened({n: (0.5, q) for n, q in zip("abcd", (0.9, 0.8, 0.7, 0.6), strict=True)})
    assert math.isnan(prefix_stability(flat))
    assert "not measured" in stability_text(math.nan)


def test_tune_reports_the_stability_of_its_periodic_runs() -> None:
    """Measured on the prefix's own two halves (9 batches: 7 scored, 3 + 4), from the
    periodic runs tune made anyway; the tuned config's header says it."""
    cfg = config()
    batches, schema = stream(cfg)
    result = tune_stream(cfg, batches, schema, 0.9, budget=4)
    assert all(not math.isnan(q) for r in result.periodic_runs.values() for q in r.halves)
    assert -1.0 <= result.stability <= 1.0
    assert result.stability == pytest.approx(prefix_stability(result.periodic_runs))
    assert result.as_dict()["prefix_stability"] == result.stability
    header = tuned_yaml(yaml.safe_dump({"name": "synth"}), result)
    assert f"# prefix stability: Spearman {result.stability:+.2f}" in header


def test_a_prefix_that_scores_every_schedule_alike_is_said_to_decide_nothing() -> None:
    """STAGGER's first rule is noiseless: every schedule scored 100% on its prefix, and
    tune took the cheapest setting of each family by default. The header must say so."""
    alike = screened({"e1": (1.0, 1.0), "e2": (1.0, 1.0), "e4": (0.999, 0.998),
                      "e8": (0.998, 0.999)})
    assert not prefix_separates("classification", alike)  # all within half a point
    apart = screened({"e1": (0.90, 0.90), "e2": (0.89, 0.90), "e4": (0.80, 0.82),
                      "e8": (0.70, 0.75)})
    assert prefix_separates("classification", apart)
    # MAE: lower is better, tolerance 2% of the best
    assert prefix_separates("regression", screened({"a": (1.0, 1.0), "b": (1.1, 1.1)}))
    assert not prefix_separates("regression", screened({"a": (1.0, 1.0), "b": (1.01, 1.01)}))
    assert not prefix_separates("classification", screened({"a": (0.9, 0.9)}))  # one alone
    assert "NONE" in separation_text(False, 16) and "longer prefix" in separation_text(False, 16)
    assert "tells the 16 periodic variants apart" in separation_text(True, 16)


def test_tune_says_whether_its_prefix_told_the_schedules_apart() -> None:
    cfg = config()
    batches, schema = stream(cfg)
    result = tune_stream(cfg, batches, schema, 0.9, budget=4)
    assert result.separates == prefix_separates("classification", result.periodic_runs)
    assert result.as_dict()["prefix_separates"] == result.separates
    header = tuned_yaml(yaml.safe_dump({"name": "synth"}), result)
    line = separation_text(result.separates, len(result.periodic_runs))
    assert f"# {line}" in header
    # tuning the tuned config again replaces the line instead of stacking a second one
    again = tuned_yaml(header, result)
    assert again.count("# prefix separation:") == 1


def test_the_tune_command_trains_on_one_torch_thread_and_writes_the_config(
        tmp_path: Path) -> None:
    """`greenloop tune` builds no pipeline runtime, so it limits torch's threads itself:
    with two it ran 10-40x the CPU on a busy 2-core machine (the second thread spins)."""
    import torch
    from typer.testing import CliRunner

    from greenloop_cli.main import app

    cfg = config()
    source = tmp_path / cfg.data.path
    source.parent.mkdir(parents=True)
    pd.concat([make_frame(80, seed=s) for s in range(N_BATCHES)]).to_csv(source, index=False)
    path = tmp_path / "synth.yaml"
    path.write_text(yaml.safe_dump({"name": "synth", "data": cfg.data.model_dump(mode="json"),
                                    "model": cfg.model.model_dump(mode="json")}))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = CliRunner().invoke(app, ["tune", "--config", str(path), "--prefix", "0.5",
                                          "--budget", "2", "--home", str(tmp_path)])
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert threads == 1
    tuned = yaml.safe_load((tmp_path / "synth.tuned.yaml").read_text())
    assert tuned["data"] == cfg.data.model_dump(mode="json")
    assert tuned["policy"]["name"] == "gated" and "periodic_every" in tuned["policy"]


def test_a_setting_is_costed_by_the_epochs_it_ran_not_by_its_cap() -> None:
    """The same schedule and cap, with and without early stopping: the run that stops
    early trains less and costs less (costed by the cap, the two would cost the same)."""
    batches, schema = stream(config())
    costs = {}
    for patience in (None, 1):
        cfg = config(name="periodic")
        recipe = {"epochs": 30, "patience": patience, "lr": 0.05}
        cfg = cfg.model_copy(update={"train": cfg.train.model_validate(
            {**cfg.train.model_dump(), "retrain": recipe})})
        costs[patience] = screen(cfg, batches, schema, f"patience {patience}").train_row_epochs
    assert 0 < costs[1] < costs[None]
