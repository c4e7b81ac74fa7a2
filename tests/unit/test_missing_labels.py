"""Real batches are accepted: unlabelled rows, missing categories, a numeric column empty
in one batch. They reach drift and prediction; scoring and training use labelled rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from greenloop.config import DataConfig, ModelConfig, RecipeConfig
from greenloop.data import (
    Schema,
    empty_numeric_columns,
    infer_schema,
    label_mask,
    validate_batch,
)
from greenloop.evaluate import evaluate, labelled
from greenloop.model import MISSING_LEVEL, TabularModel
from greenloop.train import finetune, fit, retrain
from tests.conftest import make_frame

RECIPE = RecipeConfig(epochs=5, batch_size=32, lr=0.01)
CLS = DataConfig(path=Path("x.csv"), target="y", task="classification", batch_rows=50,
                 categorical=["kind"])
REG = DataConfig(path=Path("x.csv"), target="y", task="regression", batch_rows=50)


def with_kind(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(kind=np.where(frame["x2"] > 0, "a", "b"))


def unlabel(frame: pd.DataFrame, every: int) -> pd.DataFrame:
    return frame.assign(y=frame["y"].where(frame.index % every != 0, None))


@pytest.fixture
def source() -> pd.DataFrame:
    return with_kind(make_frame(200, seed=1))


def schema_of(source: pd.DataFrame, cfg: DataConfig = CLS) -> Schema:
    return infer_schema(source, cfg)


def test_rows_with_missing_target_are_kept_and_counted(source: pd.DataFrame) -> None:
    batch = unlabel(with_kind(make_frame(60, seed=2)), every=4)  # rows 0, 4, ... unlabelled
    out = validate_batch(batch, schema_of(source), CLS)
    assert len(out) == 60
    mask = label_mask(out, "y")
    assert mask.dtype == bool and int((~mask).sum()) == 15
    assert out["y"][~mask].isna().all()
    assert set(out["y"][mask]) <= {"up", "down"}  # no 'None' or 'nan' class invented


def test_regression_rows_with_missing_target_are_kept() -> None:
    src = make_frame(100, seed=3, task="regression")
    batch = src.assign(y=src["y"].where(src.index % 3 != 0))
    out = validate_batch(batch, infer_schema(src, REG), REG)
    assert len(out) == 100 and out["y"].dtype == float
    assert int((~label_mask(out, "y")).sum()) == 34


def test_batch_without_any_label_is_accepted(source: pd.DataFrame) -> None:
    batch = with_kind(make_frame(40, seed=4)).assign(y=np.nan)
    out = validate_batch(batch, schema_of(source), CLS)
    assert len(out) == 40 and not label_mask(out, "y").any()


def test_integer_classes_keep_their_text_when_a_label_is_missing() -> None:
    src = make_frame(60, seed=5).assign(y=lambda f: (f["x0"] > 0).astype(int))
    cfg = DataConfig(path=Path("x"), target="y", task="classification", batch_rows=50)
    schema = infer_schema(src, cfg)
    full = validate_batch(src, schema, cfg)
    holed = validate_batch(src.assign(y=src["y"].where(src.index != 0)), schema, cfg)  # 1 -> 1.0
    assert set(full["y"]) == {"0", "1"}
    assert set(holed["y"].dropna()) == {"0", "1"}


CSV_WITH_NONE = """x0,x1,holiday,y
0.5,1.0,None,up
0.1,,None,down
-0.3,,Christmas,up
0.7,,None,
"""


def test_categorical_none_text_is_accepted_and_encoded_as_its_own_level() -> None:
    """pandas reads `None` as missing: a mostly-'None' holiday column must pass."""
    frame = pd.read_csv(io.StringIO(CSV_WITH_NONE))
    assert frame["holiday"].isna().sum() == 3  # the premise: pandas made them missing
    cfg = DataConfig(path=Path("x"), target="y", task="classification", batch_rows=4,
                     categorical=["holiday"])
    schema = infer_schema(frame, cfg)
    out = validate_batch(frame, schema, cfg)
    assert out["holiday"].tolist() == [None, None, "Christmas", None]
    model = TabularModel.create(out, schema, "classification", ModelConfig(hidden=[4]), seed=0)
    assert model.pre.vocab["holiday"] == sorted(["Christmas", MISSING_LEVEL])
    x = model.pre.features(out).numpy()
    level = 2 + model.pre.vocab["holiday"].index(MISSING_LEVEL)
    assert x[:, level].tolist() == [1.0, 1.0, 0.0, 1.0]  # one-hot of the missing level


def test_batch_with_all_categorical_values_missing_is_accepted(source: pd.DataFrame) -> None:
    batch = with_kind(make_frame(30, seed=6)).assign(kind=None)
    out = validate_batch(batch, schema_of(source), CLS)
    assert out["kind"].isna().all()


def test_empty_numeric_column_is_accepted_flagged_and_imputed(source: pd.DataFrame) -> None:
    schema = schema_of(source)
    batch = with_kind(make_frame(50, seed=7)).assign(x3=np.nan)
    out = validate_batch(batch, schema, CLS)
    assert empty_numeric_columns(out, schema) == ["x3"]
    assert empty_numeric_columns(validate_batch(source, schema, CLS), schema) == []
    model = retrain(validate_batch(source, schema, CLS), schema, "classification",
                    ModelConfig(hidden=[8]), RECIPE, seed=0)
    x = model.pre.features(out)
    assert torch.isfinite(x).all()
    col = model.pre.numeric.index("x3")
    assert torch.all(x[:, col] == 0)  # imputed with the fitted mean: standardised to 0
    assert len(model.predict(out)) == 50


def test_column_never_seen_with_a_value_trains_without_nan(source: pd.DataFrame) -> None:
    schema = schema_of(source)
    window = validate_batch(source.assign(x3=np.nan), schema, CLS)
    model = retrain(window, schema, "classification", ModelConfig(hidden=[8]), RECIPE, 0)
    assert all(torch.isfinite(p).all() for p in model.net.parameters())
    assert torch.isfinite(model.pre.features(window)).all()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 1e39 -> float32 inf
def test_non_finite_input_is_refused_by_the_model_not_fed_to_it(source: pd.DataFrame) -> None:
    """Defence in depth: a value validation would refuse (1e39) never reaches the net."""
    schema = schema_of(source)
    model = TabularModel.create(validate_batch(source, schema, CLS), schema, "classification",
                                ModelConfig(hidden=[4]), seed=0)
    raw = source.assign(x1=source["x1"].where(source.index != 3, 1e39))
    with pytest.raises(ValueError, match=r"non-finite model input.*'x1'"):
        model.pre.features(raw)


def labelled_and_not(source: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, Schema]:
    schema = schema_of(source)
    frame = validate_batch(unlabel(source, every=3), schema, CLS)
    return frame, labelled(frame, "y"), schema


def test_fit_ignores_unlabelled_rows(source: pd.DataFrame) -> None:
    frame, only_labelled, schema = labelled_and_not(source)
    assert len(only_labelled) < len(frame)
    a = TabularModel.create(frame, schema, "classification", ModelConfig(hidden=[8]), seed=0)
    b = a.copy()
    loss_a = fit(a, frame, "y", RECIPE, seed=1)
    loss_b = fit(b, only_labelled, "y", RECIPE, seed=1)
    assert loss_a == loss_b and np.isfinite(loss_a)
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_on_no_labelled_row_leaves_the_model_unchanged(source: pd.DataFrame) -> None:
    frame, _, schema = labelled_and_not(source)
    model = TabularModel.create(frame, schema, "classification", ModelConfig(hidden=[8]), 0)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    loss = fit(model, frame.assign(y=None), "y", RECIPE, seed=1)
    assert np.isnan(loss)
    assert all(torch.equal(v, model.net.state_dict()[k]) for k, v in before.items())


def test_new_model_needs_labels_and_learns_classes_from_labelled_rows(
        source: pd.DataFrame) -> None:
    frame, _, schema = labelled_and_not(source)
    with pytest.raises(ValueError, match="no row of the 200 has a label in 'y'"):
        retrain(frame.assign(y=None), schema, "classification", ModelConfig(hidden=[8]),
                RECIPE, 0)
    model = retrain(frame, schema, "classification", ModelConfig(hidden=[8]), RECIPE, 0)
    assert model.pre.classes == ["down", "up"]
    tuned = finetune(model, frame, "y", RECIPE, seed=2)
    assert tuned.pre.classes == ["down", "up"]  # no 'None'/'nan' class from missing labels


def test_evaluate_scores_labelled_rows_only(source: pd.DataFrame) -> None:
    frame, only_labelled, schema = labelled_and_not(source)
    model = retrain(frame, schema, "classification", ModelConfig(hidden=[8]), RECIPE, 0)
    assert evaluate(model, frame, "y") == evaluate(model, only_labelled, "y")
    assert np.isnan(evaluate(model, frame.assign(y=None), "y"))
    reg_src = make_frame(120, seed=8, task="regression")
    reg_schema = infer_schema(reg_src, REG)
    reg = validate_batch(reg_src.assign(y=reg_src["y"].where(reg_src.index % 2 == 0)),
                         reg_schema, REG)
    reg_model = retrain(reg, reg_schema, "regression", ModelConfig(hidden=[8]), RECIPE, 0)
    mae = evaluate(reg_model, reg, "y")
    assert np.isfinite(mae) and mae == evaluate(reg_model, labelled(reg, "y"), "y")
    assert np.isfinite(reg_model.pre.y_mean) and reg_model.pre.y_std > 0
