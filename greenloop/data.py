"""Reading sources, cutting them into batches, and validating arriving batches.

A batch is accepted only if it matches the dataset's schema exactly; anything else
raises `BatchRejected` with a one-line reason that names the problem, so the caller
can quarantine the file and leave the model in service untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from greenloop.config import DataConfig

READABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class BatchRejected(ValueError):
    """A batch that must not reach a model; str(err) is the one-line reason."""


@dataclass(frozen=True)
class Schema:
    """The columns a batch must carry, and which features are numeric."""

    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    passthrough: tuple[str, ...]  # present in the source, never a feature (drop, time column)

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def required(self) -> tuple[str, ...]:
        return self.features + (self.target,)


def read_table(path: Path) -> pd.DataFrame:
    kind = READABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise BatchRejected(f"{path.name}: not a CSV or Parquet file (suffix {path.suffix!r})")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        _check_csv_complete(path)
        return pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as e:
        raise BatchRejected(f"{path.name}: empty file") from e
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BatchRejected(f"{path.name}: unreadable {kind} ({first_line})") from e


def _check_csv_complete(path: Path) -> None:
    """A CSV cut mid-row (a copy interrupted, a writer that crashed) is rejected, not
    read with NaN filling the missing fields: its last line must end with a newline or
    carry as many fields as the header."""
    import csv

    with path.open("rb") as f:
        head = f.readline()
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read()
    if not head.strip() or tail.endswith(b"\n"):
        return
    last = tail.rsplit(b"\n", 1)[-1]
    if last == head.rstrip(b"\r\n") and size == len(head):
        return  # a header-only file without a newline: rejected later as "no rows"
    try:
        n_head = len(next(csv.reader([head.decode("utf-8", "replace")])))
        n_last = len(next(csv.reader([last.decode("utf-8", "replace")])))
    except (csv.Error, StopIteration):
        n_head, n_last = 1, 0
    if n_last < n_head:
        raise BatchRejected(f"{path.name}: truncated CSV (last line has {n_last} of "
                            f"{n_head} fields and no line end)")


def infer_schema(source: pd.DataFrame, cfg: DataConfig) -> Schema:
    """Numeric unless declared categorical or not numeric in the source."""
    missing = [c for c in [cfg.target, *cfg.drop, *cfg.categorical] if c not in source.columns]
    if missing:
        raise ValueError(f"config names columns absent from the source: {missing}")
    passthrough = [c for c in cfg.drop if c in source.columns]
    if cfg.time_column and cfg.time_column not in passthrough:
        passthrough.append(cfg.time_column)
    features = [c for c in source.columns if c not in passthrough and c != cfg.target]
    categorical = [c for c in features if c in cfg.categorical or not _is_numeric(source[c])]
    numeric = [c for c in features if c not in categorical]
    return Schema(cfg.target, tuple(numeric), tuple(categorical), tuple(passthrough))


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def content_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_batch(frame: pd.DataFrame, schema: Schema, cfg: DataConfig) -> pd.DataFrame:
    """Return the batch with the schema's columns and dtypes, or raise BatchRejected."""
    if len(frame.columns) == 0 or len(frame) == 0:
        raise BatchRejected("batch has no rows" if len(frame.columns) else "batch has no columns")
    if len(frame) > cfg.max_batch_rows:
        raise BatchRejected(f"batch has {len(frame)} rows, over the limit of {cfg.max_batch_rows}")
    missing = [c for c in schema.required if c not in frame.columns]
    if missing:
        what = "target" if missing == [schema.target] else "column(s)"
        raise BatchRejected(f"missing {what}: {', '.join(missing)}")
    unknown = [c for c in frame.columns if c not in schema.required + schema.passthrough]
    if unknown and cfg.unknown_columns == "reject":
        raise BatchRejected(f"unknown column(s): {', '.join(map(str, unknown))}")
    out = frame[list(schema.required)].copy()
    for col in schema.numeric:
        out[col] = _as_numeric(out[col], col)
    for col in schema.categorical:
        out[col] = out[col].astype("string").astype(object).where(out[col].notna(), None)
    all_nan = [c for c in schema.features if out[c].isna().all()]
    if all_nan:
        raise BatchRejected(f"column(s) entirely empty (all NaN): {', '.join(all_nan)}")
    _check_target(out[schema.target], schema.target, cfg)
    if cfg.task == "classification":
        out[schema.target] = out[schema.target].astype(str)
    else:
        out[schema.target] = out[schema.target].astype(float)
    return out.reset_index(drop=True)


def _as_numeric(s: pd.Series, col: str) -> pd.Series:
    converted = pd.to_numeric(s, errors="coerce")
    bad = s.notna() & converted.isna()
    if bad.any():
        example = s[bad].iloc[0]
        raise BatchRejected(f"text in numeric column {col!r} (e.g. {str(example)[:30]!r})")
    converted = converted.astype(float)
    if np.isinf(converted).any():
        raise BatchRejected(f"infinite value in numeric column {col!r}")
    return converted


def _check_target(y: pd.Series, name: str, cfg: DataConfig) -> None:
    if y.isna().any():
        raise BatchRejected(f"target {name!r} has {int(y.isna().sum())} missing value(s)")
    as_number = pd.to_numeric(y, errors="coerce").astype(float)
    if np.isinf(as_number).any():  # also for class labels: 'inf' is no class
        raise BatchRejected(f"target {name!r} has {int(np.isinf(as_number).sum())} "
                            "infinite value(s)")
    if cfg.task == "regression":
        numeric = pd.to_numeric(y, errors="coerce")
        if numeric.isna().any():
            raise BatchRejected(f"text in regression target {name!r}")
        if np.isinf(numeric.astype(float)).any():
            raise BatchRejected(f"target {name!r} has infinite value(s)")


def split_stream(source: pd.DataFrame, cfg: DataConfig) -> Iterator[pd.DataFrame]:
    """Cut a historical table into arrival batches, in time order."""
    if cfg.batch_rows is not None:
        for start in range(0, len(source), cfg.batch_rows):
            yield source.iloc[start : start + cfg.batch_rows].reset_index(drop=True)
        return
    assert cfg.time_column is not None and cfg.period is not None
    when = pd.to_datetime(source[cfg.time_column], errors="raise")
    keyed = source.assign(_arrival=when)
    for _, part in keyed.groupby(pd.Grouper(key="_arrival", freq=cfg.period), sort=True):
        if len(part):
            yield part.drop(columns="_arrival").reset_index(drop=True)


def write_stream(source: pd.DataFrame, cfg: DataConfig, folder: Path) -> list[Path]:
    """Cut the source into one CSV per arrival (idempotent: unchanged files are kept,
    so their content hashes, and the ledger's dedupe, stay stable)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(split_stream(source, cfg), start=1):
        path = folder / f"batch-{i:05d}.csv"
        text = part.to_csv(index=False)
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        paths.append(path)
    return paths
