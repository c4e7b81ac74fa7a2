"""Parquet to and from pandas without a pandas call per column.

`pa.Table.from_pandas` and `Table.to_pandas` build one pandas Series per column: on a
500-column batch that is ~11 ms to write and ~14 ms to read, most of a wide skip's
ingest. Batches here are mostly float64 features, which move as one 2-D block instead;
the other columns (text, integers, booleans) still go through pandas. The frame read
back equals what `pd.read_parquet` returns for the same file (tests/unit/test_columnar.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table (no index, no pandas schema metadata)."""
    floats = [c for c, t in frame.dtypes.items() if t == np.float64]
    arrays: dict[str, pa.Array] = {}
    if floats:
        block = np.asfortranarray(frame[floats].to_numpy())  # each column contiguous
        for k, c in enumerate(floats):
            arrays[c] = pa.array(block[:, k], from_pandas=True)  # NaN -> null, as pandas
    others = [c for c in frame.columns if c not in arrays]
    if others:
        rest = pa.Table.from_pandas(frame[others], preserve_index=False)
        for c in others:
            arrays[c] = rest.column(c)
    return pa.Table.from_arrays([arrays[c] for c in frame.columns],
                                names=[str(c) for c in frame.columns])


def read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file as pandas reads it, with the float64 columns as one block."""
    table = pq.read_table(path)
    names = table.column_names
    if (table.schema.metadata or {}).get(b"pandas") or len(set(names)) != len(names):
        # Written by pandas (an index, dtypes to restore) or ambiguous: pandas' own way.
        return table.to_pandas()
    floats = [f.name for f in table.schema if pa.types.is_float64(f.type)]
    if len(floats) < 2:
        return table.to_pandas()
    block = np.empty((table.num_rows, len(floats)), dtype=np.float64, order="F")
    for k, c in enumerate(floats):
        block[:, k] = table.column(c).to_numpy()  # nulls come back as NaN
    parts = [pd.DataFrame(block, columns=floats, copy=False)]
    float_names = set(floats)
    others = [c for c in names if c not in float_names]
    if others:
        parts.append(table.select(others).to_pandas())
    return pd.concat(parts, axis=1)[names]
