"""The accepted Parquet file reads back as exactly the validated batch (values and dtypes):
what the update learns from is what ingest validated and DVC versioned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from greenloop.config import DataConfig
from greenloop.data import infer_schema, validate_batch
from tasks.ingest import durable_write


def _raw(rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "x": rng.normal(size=rows),
        "n": rng.integers(0, 9, rows),  # an integer column becomes float64
        "empty": [np.nan] * rows,  # a numeric column empty in this batch
        "city": rng.choice(["a", "b", None], rows),  # a missing category is a level
        "y": rng.choice(["yes", "no", None], rows),  # missing labels are kept
    })


def test_written_frame_equals_what_the_file_reads_back(tmp_path):
    cfg = DataConfig(path="x.csv", target="y", task="classification", categorical=["city"],
                     batch_rows=40)
    raw = _raw()
    frame = validate_batch(raw, infer_schema(raw.fillna({"empty": 0.0}), cfg), cfg)
    path = tmp_path / "batch.parquet"
    durable_write(frame, path)
    read_back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(read_back, frame.reset_index(drop=True), check_exact=True)
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed


def test_only_text_columns_are_dictionary_encoded(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0, 2.0], "c": ["a", "a", "b"]})
    durable_write(frame, tmp_path / "b.parquet")
    meta = pq.ParquetFile(tmp_path / "b.parquet").metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(2)}
    assert any("DICTIONARY" in e for e in encodings["c"])
    assert not any("DICTIONARY" in e for e in encodings["x"])
