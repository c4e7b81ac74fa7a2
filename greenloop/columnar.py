"""Parquet to and from pandas without a pandas call per column; a few columns of a frame
as one float array without building a sub-frame.

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
    # Text, integers, booleans: each converted as `Table.from_pandas` converts it, without
    # its machinery (~0.7 ms even for the one label column of a 300-row batch, measured).
    for c in frame.columns:
        if c not in arrays:
            arrays[c] = pa.array(frame[c], from_pandas=True)
    return pa.Table.from_arrays([arrays[c] for c in frame.columns],
                                names=[str(c) for c in frame.columns])


def read_file(path: Path | bytes) -> pa.Table:
    """One Parquet file (a path, or its bytes already read), read on this thread.
    `pq.read_table` goes through the dataset layer (made for folders of files) and a
    thread pool: on a 500-column, 200-row batch that costs ~8-9 ms of CPU against
    ~5 ms here (measured, 2-core machine)."""
    source = pa.BufferReader(path) if isinstance(path, bytes) else path
    with pq.ParquetFile(source) as f:
        return f.read(use_threads=False)


def read_parquet(path: Path | bytes) -> pd.DataFrame:
    """A Parquet file (or its bytes) as pandas reads it, the float64 columns as one block."""
    table = read_file(path)
    names = table.column_names
    if (table.schema.metadata or {}).get(b"pandas") or len(set(names)) != len(names):
        # Written by pandas (an index, dtypes to restore) or ambiguous: pandas' own way.
        return table.to_pandas()
    where = [i for i, t in enumerate(table.schema.types) if t == pa.float64()]
    if len(where) < 2:
        return table.to_pandas()
    columns = table.columns  # by position: a lookup by name per column costs ~2 ms at 500
    block = np.empty((table.num_rows, len(where)), dtype=np.float64, order="F")
    for k, i in enumerate(where):
        block[:, k] = columns[i].to_numpy()  # nulls come back as NaN
    frame = pd.DataFrame(block, columns=[names[i] for i in where], copy=False)
    if len(where) == len(names):
        return frame
    is_float = set(where)
    others = table.select([i for i in range(len(names)) if i not in is_float]).to_pandas()
    return pd.concat([frame, others], axis=1)[names]


FEW_COLUMNS = 64  # up to here, column by column is cheaper than a sub-frame (measured)


def float_columns(frame: pd.DataFrame, columns: list[str],
                  dtype: type[np.floating] = np.float64) -> np.ndarray:
    """`frame[columns].to_numpy(dtype=dtype, na_value=np.nan)`, in the same (column-major)
    layout. Selecting a list of columns builds a sub-frame (an index lookup and a copy of
    the block): ~0.3 ms for 8 columns alone, ~1 ms inside a served skip, which does it
    three times (validation, the model's inputs, the drift check; py-spy, 7 Dec). A few
    columns are taken one by one instead, each converted as the sub-frame converts it."""
    if len(columns) > FEW_COLUMNS or not frame.columns.is_unique:
        return frame[columns].to_numpy(dtype=dtype, na_value=np.nan)
    out = np.empty((len(frame), len(columns)), dtype=dtype, order="F")
    for k, c in enumerate(columns):
        out[:, k] = frame[c].to_numpy(dtype=dtype, na_value=np.nan)
    return out
