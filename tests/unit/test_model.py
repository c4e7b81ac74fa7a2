"""Save/load round trips for each task type, and the warm-start rules."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from greenloop.config import DataConfig, ModelConfig, RecipeConfig
from greenloop.data import infer_schema, validate_batch
from greenloop.evaluate import evaluate
from greenloop.model import TabularModel
from greenloop.train import finetune, retrain
from tests.conftest import make_frame

RECIPE = RecipeConfig(epochs=20, batch_size=32, lr=0.01)


def prepared(task: str, n_classes: int = 2, seed: int = 0) -> tuple[pd.DataFrame, object]:
    f = make_frame(400, seed=seed, task=task, n_classes=n_classes)
    f["kind"] = np.where(f["x3"] > 0.5, "hi", "lo")
    f.loc[f.index % 17 == 0, "x2"] = np.nan  # missing feature values are imputed
    cfg = DataConfig(path=Path("x"), target="y", task=task, batch_rows=100, categorical=["kind"])
    schema = infer_schema(f, cfg)
    return validate_batch(f, schema, cfg), schema


@pytest.mark.parametrize(("task", "n_classes"), [("classification", 2),
                                                 ("classification", 6), ("regression", 1)])
def test_round_trip_predicts_identically(tmp_path: Path, task: str, n_classes: int) -> None:
    frame, schema = prepared(task, n_classes)
    model = retrain(frame, schema, task, ModelConfig(hidden=[16]), RECIPE, seed=0)
    model.save(tmp_path / "m")
    loaded = TabularModel.load(tmp_path / "m")
    before, after = model.predict(frame), loaded.predict(frame)
    if task == "classification":
        assert (before == after).all()
        assert evaluate(loaded, frame, "y") > 0.8  # it learned the planted concept
    else:
        np.testing.assert_allclose(before, after, rtol=1e-6)
        assert evaluate(loaded, frame, "y") < 1.5  # MAE well under the target's spread (~4.2)


def test_state_is_loaded_weights_only(tmp_path: Path) -> None:
    frame, schema = prepared("classification")
    retrain(frame, schema, "classification", ModelConfig(hidden=[8]), RECIPE, 0).save(tmp_path)

    class Evil:
        def __reduce__(self):  # would run code if unpickled
            return (Path.write_text, (tmp_path / "pwned", "x"))

    torch.save({"0.weight": Evil()}, tmp_path / "state_dict.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        TabularModel.load(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_finetune_leaves_champion_untouched_and_grows_new_class() -> None:
    frame, schema = prepared("classification", n_classes=3)
    champion = retrain(frame, schema, "classification", ModelConfig(hidden=[16]), RECIPE, 0)
    snapshot = {k: v.clone() for k, v in champion.net.state_dict().items()}
    fresh = frame.copy()
    fresh.loc[fresh.index < 40, "y"] = "c9"  # a class seen for the first time
    candidate = finetune(champion, fresh, "y", RECIPE, seed=1)
    assert champion.pre.classes == ["c0", "c1", "c2"]
    assert all(torch.equal(v, champion.net.state_dict()[k]) for k, v in snapshot.items())
    assert candidate.pre.classes == ["c0", "c1", "c2", "c9"]
    assert "c9" in set(candidate.predict(fresh))


def test_unseen_category_and_seed_determinism() -> None:
    frame, schema = prepared("classification")
    a = retrain(frame, schema, "classification", ModelConfig(hidden=[8]), RECIPE, seed=3)
    b = retrain(frame, schema, "classification", ModelConfig(hidden=[8]), RECIPE, seed=3)
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    odd = frame.assign(kind="never-seen")
    assert len(a.predict(odd)) == len(odd)


def test_a_column_constant_up_to_rounding_is_scaled_by_one() -> None:
    """Elec2's `transfer` is one value for ~50 weeks; its float std there is ~1e-16, not
    0. Scaling by it turned later inputs into 1e15 and broke every warm-started model."""
    frame, schema = prepared("classification")
    frame["x2"] = 0.414912  # one value, as read from a CSV
    frame.loc[::3, "x2"] = 0.1 + 0.314912  # the same value again, by another rounding path
    assert 0 < frame["x2"].std(ddof=0) < 1e-12  # what pandas computes: rounding, not 0
    model = retrain(frame, schema, "classification", ModelConfig(hidden=[8]), RECIPE, seed=0)
    later = frame.copy()
    later["x2"] = np.linspace(0.0, 1.0, len(later))  # the column starts to vary
    x = model.pre.features(later)
    assert float(x.abs().max()) < 10  # offsets from the fitted mean, not 1e15
    y = frame.assign(y=1e6 + 1e-10 * (frame.index % 2))  # a target constant up to rounding
    pre = type(model.pre).fit(y, schema, "regression")
    assert pre.y_std == 1.0
