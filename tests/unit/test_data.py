"""Schema validation: every bad batch is refused with a reason that names the problem."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greenloop.config import DataConfig
from greenloop.data import BatchRejected, infer_schema, read_table, split_stream, validate_batch
from tests.conftest import make_frame

CFG = DataConfig(path=Path("x.csv"), target="y", task="classification", batch_rows=50,
                 categorical=["kind"])


@pytest.fixture
def good() -> pd.DataFrame:
    f = make_frame(60, seed=1)
    f["kind"] = np.where(f["x2"] > 0, "a", "b")
    return f


def check(frame: pd.DataFrame, good: pd.DataFrame, cfg: DataConfig = CFG) -> pd.DataFrame:
    return validate_batch(frame, infer_schema(good, cfg), cfg)


def test_good_batch_passes_with_typed_columns(good: pd.DataFrame) -> None:
    out = check(good, good)
    assert list(out.columns) == ["x0", "x1", "x2", "x3", "x4", "kind", "y"]
    assert out["x0"].dtype == float and set(out["y"]) == {"up", "down"}


def test_a_batch_comes_back_in_schema_order_whatever_its_own(good: pd.DataFrame) -> None:
    """Columns reordered, a shuffled index: the batch comes back in the schema's column
    order on a fresh 0..n-1 index, row values kept in the order they arrived."""
    shuffled = good[["y", "kind", *reversed(["x0", "x1", "x2", "x3", "x4"])]].sample(
        frac=1.0, random_state=3)
    out = check(shuffled, good)
    assert list(out.columns) == ["x0", "x1", "x2", "x3", "x4", "kind", "y"]
    assert out.index.equals(pd.RangeIndex(len(good)))
    expected = shuffled.reset_index(drop=True)
    assert out["x3"].tolist() == expected["x3"].tolist()
    assert out["kind"].tolist() == expected["kind"].tolist()
    assert out["y"].tolist() == expected["y"].tolist()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns="x3"), "missing column.*x3"),
        (lambda f: f.drop(columns="y"), "missing target: y"),
        (lambda f: f.assign(extra=1.0), "unknown column.*extra"),
        (lambda f: f.assign(x1=f["x1"].astype(object).where(f.index != 3, "n/a")),
         "text in numeric column 'x1'.*n/a"),
        # (A numeric column all NaN and a missing target were rejections until issue 11;
        # they are accepted now: see test_missing_labels.py.)
        (lambda f: f.iloc[0:0], "no rows"),
        (lambda f: f.assign(x0=f["x0"].where(f.index != 2, np.inf)), "infinite value.*'x0'"),
        (lambda f: f.assign(x0=f["x0"].where(f.index != 2, -np.inf)), "infinite value.*'x0'"),
        (lambda f: f.assign(x2=f["x2"].where(f.index != 4, 1e39)),
         "beyond float32 range.*'x2'"),
        (lambda f: f.assign(x2=f["x2"].where(f.index != 4, -1e39)),
         "beyond float32 range.*'x2'"),
        (lambda f: f.assign(x3=f["x3"].astype(object).where(f.index != 4, "1e39")),
         "beyond float32 range.*'x3'"),  # text read from a CSV, parsed, then checked
        (lambda f: f.assign(x1=f["x1"].astype(object).where(f.index != 3, "inf")),
         "infinite value.*'x1'"),
        (lambda f: f.assign(y=f["y"].where(f.index != 5, "inf")), "target 'y' has 1 infinite"),
    ],
)
def test_bad_batches_are_named(good: pd.DataFrame, mutate, message: str) -> None:
    with pytest.raises(BatchRejected, match=message):
        check(mutate(good.copy()), good)


def test_unknown_columns_can_be_dropped(good: pd.DataFrame) -> None:
    cfg = CFG.model_copy(update={"unknown_columns": "drop"})
    out = check(good.assign(extra=1.0), good, cfg)
    assert "extra" not in out.columns


def test_size_limit(good: pd.DataFrame) -> None:
    cfg = CFG.model_copy(update={"max_batch_rows": 10})
    with pytest.raises(BatchRejected, match="over the limit of 10"):
        check(good, good, cfg)


@pytest.mark.parametrize(("value", "message"), [
    (np.inf, "infinite"), (-np.inf, "infinite"), (1e39, "beyond float32 range.*'y'"),
    ("12 kg", "text in regression target 'y'"),
])
def test_regression_target_must_be_finite_in_float32(value: object, message: str) -> None:
    cfg = DataConfig(path=Path("x.csv"), target="y", task="regression", batch_rows=10)
    f = make_frame(20, seed=2, task="regression")
    bad = f.assign(y=f["y"].astype(object).where(f.index != 1, value))
    with pytest.raises(BatchRejected, match=message):
        validate_batch(bad, infer_schema(f, cfg), cfg)


def test_float32_limit_itself_passes(good: pd.DataFrame) -> None:
    """The largest finite float32 is a value, only beyond it is refused."""
    edge = float(np.finfo(np.float32).max)
    out = check(good.assign(x2=good["x2"].where(good.index != 4, -edge)), good)
    assert out["x2"].iloc[4] == -edge


def test_wide_batch_of_text_columns_is_parsed(good: pd.DataFrame) -> None:
    """Numbers that arrive as text (an object column) are converted, not refused."""
    as_text = good.assign(x0=good["x0"].map(repr), x1=good["x1"].astype(object))
    out = check(as_text, good)
    np.testing.assert_allclose(out[["x0", "x1"]].to_numpy(), good[["x0", "x1"]].to_numpy())
    assert out["x0"].dtype == float


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "a.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(BatchRejected, match=r"a.xlsx: not a CSV or Parquet file \(suffix '.xlsx'"):
        read_table(tmp_path / "a.xlsx")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(BatchRejected, match="empty file"):
        read_table(tmp_path / "e.csv")
    (tmp_path / "t.parquet").write_bytes(b"PAR1\x00\x01garbage")
    with pytest.raises(BatchRejected, match="unreadable parquet"):
        read_table(tmp_path / "t.parquet")


def test_split_by_rows_and_by_time() -> None:
    f = make_frame(130, seed=0)
    sizes = [len(b) for b in split_stream(f, CFG)]
    assert sizes == [50, 50, 30]
    f["when"] = pd.date_range("2020-01-01", periods=130, freq="D").astype(str)
    by_time = DataConfig(path=Path("x"), target="y", task="classification", time_column="when",
                         period="30D")
    parts = list(split_stream(f, by_time))
    assert [len(p) for p in parts] == [30, 30, 30, 30, 10]
    assert "when" in infer_schema(f, by_time).passthrough


def test_class_labels_are_typed_per_distinct_label_and_mapped_back_row_by_row(
        good: pd.DataFrame) -> None:
    """Labels are checked and written as text once per distinct label, then put back in
    row order: every row keeps its own class, a missing one stays None, and an infinite
    label is counted per row, not per distinct value."""
    y = pd.Series([3.0, np.nan, 1.0, 3.0, None, 2.0] * 10)
    out = check(good.assign(y=y), good)
    expected = [None if pd.isna(v) else str(int(v)) for v in y]
    assert out["y"].tolist() == expected
    with pytest.raises(BatchRejected, match="target 'y' has 3 infinite"):
        check(good.assign(y=good["y"].where(~good.index.isin([4, 9, 30]), "inf")), good)


def test_an_integer_coded_category_is_one_level_with_or_without_a_gap(tmp_path: Path) -> None:
    """Codes 1, 2 read as 1.0, 2.0 from a file with a missing code: still '1' and '2',
    not new levels the model never saw. Codes that are not whole keep their decimals."""
    src = pd.DataFrame({"x": [0.5, 1.5, 2.5, 3.5], "code": [1, 2, 1, 2],
                        "ratio": [0.5, 1.5, 0.5, 1.5], "y": ["a", "b", "a", "b"]})
    cfg = DataConfig(path=Path("x.csv"), target="y", task="classification", batch_rows=4,
                     categorical=["code", "ratio"])
    schema = infer_schema(src, cfg)
    full, gappy = tmp_path / "full.csv", tmp_path / "gappy.csv"
    src.to_csv(full, index=False)
    src.assign(code=[1, None, 1, 2], ratio=[0.5, None, 0.5, 1.5]).to_csv(gappy, index=False)
    assert read_table(gappy)["code"].dtype == np.float64  # what makes the difference
    a = validate_batch(read_table(full), schema, cfg)
    b = validate_batch(read_table(gappy), schema, cfg)
    assert a["code"].tolist() == ["1", "2", "1", "2"]
    assert b["code"].tolist() == ["1", None, "1", "2"]
    assert a["ratio"].tolist() == ["0.5", "1.5", "0.5", "1.5"]
    assert b["ratio"].tolist() == ["0.5", None, "0.5", "1.5"]
