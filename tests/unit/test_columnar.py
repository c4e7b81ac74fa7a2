"""Parquet through greenloop.columnar reads back exactly what pandas reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from greenloop.columnar import read_parquet, to_arrow


def _frame(rows: int, floats: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    data: dict[str, object] = {f"x{i}": rng.normal(size=rows) for i in range(floats)}
    data["city"] = pd.Series(rng.choice(["a", "b", None], rows), dtype=object)
    data["label"] = rng.integers(0, 3, rows)
    data["flag"] = rng.random(rows) > 0.5
    data["f32"] = rng.normal(size=rows).astype(np.float32)
    frame = pd.DataFrame(data)
    frame.loc[[0, 5], "x0"] = np.nan
    frame["empty"] = np.nan  # a numeric column with no value in this batch
    return frame[["label", *frame.columns.drop("label")]]  # not the floats first


@pytest.mark.parametrize("floats", [0, 1, 8, 500])
def test_written_and_read_back_as_pandas_would(tmp_path: Path, floats: int) -> None:
    frame = _frame(40, floats)
    ours, theirs = tmp_path / "ours.parquet", tmp_path / "theirs.parquet"
    pq.write_table(to_arrow(frame), ours)
    frame.to_parquet(theirs, index=False)
    expected = pd.read_parquet(theirs)
    pd.testing.assert_frame_equal(pd.read_parquet(ours), expected)
    pd.testing.assert_frame_equal(read_parquet(ours), expected)
    pd.testing.assert_frame_equal(read_parquet(theirs), expected)


def test_a_pandas_index_in_the_file_is_restored(tmp_path: Path) -> None:
    frame = _frame(10, 4).set_index("label")
    path = tmp_path / "indexed.parquet"
    frame.to_parquet(path)
    pd.testing.assert_frame_equal(read_parquet(path), pd.read_parquet(path))


def test_columns_other_than_float64_are_typed_as_from_pandas_types_them() -> None:
    """Text, integers, booleans and pandas' nullable dtypes, converted one column at a
    time: the same Arrow types and values as `Table.from_pandas` gives."""
    import pyarrow as pa

    frame = _frame(30, 2)
    frame["nullable_int"] = pd.array([1, None, 3] * 10, dtype="Int64")
    frame["text"] = pd.array(["a", None, "c"] * 10, dtype="string")
    ours = to_arrow(frame)
    theirs = pa.Table.from_pandas(frame, preserve_index=False)
    assert ours.schema.equals(theirs.schema.remove_metadata())
    assert ours.equals(pa.Table.from_arrays(theirs.columns, names=theirs.column_names))


def _mixed_frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    floats = rng.normal(size=rows)
    floats[rng.random(rows) < 0.2] = np.nan
    nullable = pd.array(rng.integers(-5, 5, rows), dtype="Int64")
    nullable[rng.random(rows) < 0.2] = pd.NA
    frame = pd.DataFrame({
        "f": floats, "i": rng.integers(-10**6, 10**6, rows), "b": rng.random(rows) < 0.5,
        "f32": rng.normal(size=rows).astype(np.float32), "nullable": nullable,
        "objnum": pd.Series(rng.normal(size=rows), dtype=object),
        "text": [str(v) for v in rng.integers(0, 3, rows)], "big": rng.normal(size=rows) * 1e300,
    })
    return frame.sample(frac=1.0, axis=1, random_state=int(rng.integers(1 << 30)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_few_columns_come_out_as_the_sub_frame_gives_them(dtype: type) -> None:
    from greenloop.columnar import float_columns

    rng = np.random.default_rng(5)
    for _ in range(60):
        frame = _mixed_frame(rng, int(rng.integers(1, 40)))
        numeric = [c for c in frame.columns if c != "text"]
        columns = list(rng.choice(numeric, size=int(rng.integers(1, len(numeric) + 1)),
                                  replace=False))
        with np.errstate(over="ignore"):
            ours = float_columns(frame, columns, dtype)
            theirs = frame[columns].to_numpy(dtype=dtype, na_value=np.nan)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert np.array_equal(ours, theirs, equal_nan=True)
        assert ours.flags.f_contiguous  # the layout sums and transposes see


def test_validation_reads_plain_numbers_as_the_dtype_scan_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The validated numeric block is the same whether or not its columns were seen to be
    plain numbers first; text in a numeric column still goes through parsing."""
    from greenloop import data

    rng = np.random.default_rng(9)
    for _ in range(40):
        frame = _mixed_frame(rng, int(rng.integers(1, 40))).drop(columns=["big"])
        columns = [c for c in frame.columns if c not in ("objnum", "nullable")]
        fast = data._numeric_block(frame, columns)
        with monkeypatch.context() as m:
            m.setattr(data, "_plain_numbers", lambda *_args: False)
            slow = data._numeric_block(frame, columns)
        pd.testing.assert_frame_equal(fast, slow)
        assert data._plain_numbers(frame, [c for c in columns if c != "text"])
        assert not data._plain_numbers(frame, columns)  # text: parsed, as before
