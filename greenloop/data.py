"""Reading sources, cutting them into batches, and validating arriving batches.

A batch is accepted only if it matches the dataset's schema exactly; anything else
raises `BatchRejected` with a one-line reason that names the problem, so the caller
can quarantine the file and leave the model in service untouched. Missing values are
not a schema violation: unlabelled rows, missing categories and a numeric column empty in
one batch are accepted (see `validate_batch`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from greenloop.columnar import FEW_COLUMNS, float_columns, read_parquet
from greenloop.config import DataConfig
from greenloop.csvfile import COMPRESSED, TruncatedCsv, UnreadableArchive, read_csv

# What ingest reads, by the end of the file name: text tables (the separator is sniffed,
# greenloop/csvfile.py), each also compressed, and Parquet.
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


def table_kind(path: Path) -> str | None:
    """"csv" or "parquet" by the file name's end (`b.csv.gz` is a CSV); None if neither."""
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(COMPRESSED):
        name = name[:name.rindex(".")]
    return "csv" if name.endswith(TEXT_SUFFIXES) else None


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
    kind = table_kind(path)
    if kind is None:
        raise BatchRejected(f"{path.name}: not a CSV or Parquet file (suffix {path.suffix!r}; "
                            f"read: {', '.join(TEXT_SUFFIXES)}, each also "
                            f"{'/'.join(COMPRESSED)}, {', '.join(PARQUET_SUFFIXES)})")
    try:
        if kind == "parquet":
            return read_parquet(path)
        return read_csv(path)
    except (TruncatedCsv, UnreadableArchive) as e:
        raise BatchRejected(f"{path.name}: {e}") from e
    except pd.errors.EmptyDataError as e:
        raise BatchRejected(f"{path.name}: empty file") from e
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BatchRejected(f"{path.name}: unreadable {kind} ({first_line})") from e


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
    """Return the batch with the schema's columns and dtypes, or raise BatchRejected.

    Real batches are incomplete: a missing target keeps its row (drift and prediction use
    it, scoring and training leave it out: see `label_mask`), a missing categorical value
    is a level of its own, and a numeric column empty in this batch stays NaN for the
    model to impute (see `empty_numeric_columns`). Only what no model can use is refused.
    """
    if len(frame.columns) == 0 or len(frame) == 0:
        raise BatchRejected("batch has no rows" if len(frame.columns) else "batch has no columns")
    if len(frame) > cfg.max_batch_rows:
        raise BatchRejected(f"batch has {len(frame)} rows, over the limit of {cfg.max_batch_rows}")
    present = set(frame.columns)
    missing = [c for c in schema.required if c not in present]
    if missing:
        what = "target" if missing == [schema.target] else "column(s)"
        raise BatchRejected(f"missing {what}: {', '.join(missing)}")
    known = {*schema.required, *schema.passthrough}  # a set: 500 columns, not 500 x 500
    unknown = [c for c in frame.columns if c not in known]
    if unknown and cfg.unknown_columns == "reject":
        raise BatchRejected(f"unknown column(s): {', '.join(map(str, unknown))}")
    # Built in the schema's order (numeric, categorical, target) on a fresh RangeIndex:
    # no concat aligning indexes and no reordering take over every column (~2 ms a
    # 500-column batch, measured).
    out = _numeric_block(frame, list(schema.numeric))
    if schema.categorical:
        cat = _integral_codes_as_integers(frame[list(schema.categorical)])
        text = cat.astype("string").astype(object).where(cat.notna(), None)
        for col in schema.categorical:
            out[col] = text[col].to_numpy(dtype=object)
    out[schema.target] = _target_column(frame[schema.target], schema.target, cfg)
    return out


def label_mask(frame: pd.DataFrame, target: str) -> np.ndarray:
    """True where the row carries a label (only those rows are scored or trained on)."""
    return pd.notna(frame[target].to_numpy())  # on the array: no Series built (~0.1 ms)


def empty_numeric_columns(frame: pd.DataFrame, schema: Schema) -> list[str]:
    """Numeric features with no value at all in this batch (imputed by the model)."""
    if not schema.numeric:
        return []
    empty = frame[list(schema.numeric)].isna().to_numpy().all(axis=0)
    return [c for c, e in zip(schema.numeric, empty, strict=True) if e]


FLOAT32_MAX = float(np.finfo(np.float32).max)  # beyond it a value is inf in the model


def _numeric_block(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The numeric features as one float64 block, checked at once: cost per batch, not
    per column. Only columns not already of a numeric dtype (text read from a CSV) are
    converted one by one, because only they can hold text."""
    if not columns:
        return pd.DataFrame(index=pd.RangeIndex(len(frame)))
    if _plain_numbers(frame, columns):  # most batches: no sub-frame, no dtype scan
        values = float_columns(frame, columns)
    else:
        block = frame[columns]
        textual = block.select_dtypes(exclude=["number", "bool"]).columns
        if len(textual):
            block = block.copy()
            for col in textual:
                block[col] = _parse_numbers(block[col], col)
        values = block.to_numpy(dtype=np.float64, na_value=np.nan)
    _check_finite_float32(values, columns, "numeric column")
    return pd.DataFrame(values, columns=columns)


def _plain_numbers(frame: pd.DataFrame, columns: list[str]) -> bool:
    """A few columns, each of a NumPy number or bool dtype (what a CSV of numbers reads
    as): nothing to parse. Anything else (text, extension dtypes, dates) is left to
    `select_dtypes`, whose rules decide what is parsed."""
    return (len(columns) <= FEW_COLUMNS and frame.columns.is_unique
            and all(isinstance(dt := frame[c].dtype, np.dtype) and dt.kind in "iufcb"
                    for c in columns))


def _parse_numbers(s: pd.Series, col: str) -> pd.Series:
    converted = pd.to_numeric(s, errors="coerce")
    bad = s.notna() & converted.isna()
    if bad.any():
        example = s[bad].iloc[0]
        raise BatchRejected(f"text in numeric column {col!r} (e.g. {str(example)[:30]!r})")
    return converted.astype(float)


def _check_finite_float32(values: np.ndarray, columns: list[str], what: str) -> None:
    """Infinities, and finite values a float32 model would turn into infinities."""
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(values)
    infinite = np.isinf(magnitude).any(axis=0)
    if infinite.any():
        names = [c for c, bad in zip(columns, infinite, strict=True) if bad]
        raise BatchRejected(f"infinite value in {what} {', '.join(map(repr, names))}")
    with np.errstate(invalid="ignore"):
        too_large = (magnitude > FLOAT32_MAX).any(axis=0)
    if too_large.any():
        names = [c for c, bad in zip(columns, too_large, strict=True) if bad]
        raise BatchRejected(f"value beyond float32 range (|x| > {FLOAT32_MAX:.4g}) in {what} "
                            f"{', '.join(map(repr, names))}")


def _whole_numbers(values: np.ndarray) -> bool:
    """Every value a whole number that int64 and float64 both hold exactly."""
    return bool(np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53))


def _integral_codes_as_integers(cat: pd.DataFrame) -> pd.DataFrame:
    """A categorical column of integer codes is read as float as soon as one value is
    missing (3 -> 3.0): written as integers, a level is the same text ('3') whether or
    not its batch has a gap, as class labels are (`_class_labels`)."""
    floats = [col for col, dtype in zip(cat.columns, cat.dtypes, strict=True)
              if dtype.kind == "f"]
    if not floats:
        return cat
    cat = cat.copy(deep=False)
    for col in floats:
        values = cat[col].to_numpy(dtype=np.float64, na_value=np.nan)
        known = values[~np.isnan(values)]
        if _whole_numbers(known):
            cat[col] = pd.array(values, dtype="Int64")  # NaN becomes <NA>: still missing
    return cat


def _target_column(y: pd.Series, name: str, cfg: DataConfig) -> np.ndarray:
    """The target typed for the task, missing labels kept as missing (None or NaN)."""
    if cfg.task == "regression":
        return _regression_target(y, name)
    return _class_labels(y, name)


def _regression_target(y: pd.Series, name: str) -> np.ndarray:
    if y.dtype.kind in "biuf":  # already numbers (a CSV column of numbers): no parsing
        values = y.to_numpy(dtype=np.float64, na_value=np.nan)
        unparsed = np.zeros(len(values), dtype=bool)
    else:
        values = pd.to_numeric(y, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        unparsed = y.notna().to_numpy(dtype=bool) & np.isnan(values)
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        raise BatchRejected(f"target {name!r} has {n_inf} infinite value(s)")
    if unparsed.any():
        example = y[unparsed].iloc[0]
        raise BatchRejected(f"text in regression target {name!r} (e.g. {str(example)[:30]!r})")
    _check_finite_float32(values[:, None], [name], "regression target")
    return values


def _class_labels(y: pd.Series, name: str) -> np.ndarray:
    """Class labels as text, None where missing. The checks and the text run on the
    distinct labels only (a few), not per row: a per-row parse was most of a small
    batch's validation. A column of integer classes is read as float as soon as one
    label is missing (1 -> 1.0): integral floats are written as integers, so a class is
    the same text whether or not its batch has a missing label."""
    codes, distinct = pd.factorize(y)  # a missing label gets code -1
    labels = pd.Series(distinct)
    as_number = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64,
                                                               na_value=np.nan)
    infinite = np.isinf(as_number)
    if infinite.any():  # 'inf' is no class
        n_inf = int(np.count_nonzero(infinite[codes[codes >= 0]]))
        raise BatchRejected(f"target {name!r} has {n_inf} infinite value(s)")
    if pd.api.types.is_float_dtype(labels.dtype):
        values = labels.to_numpy(dtype=float)
        if _whole_numbers(values):
            labels = pd.Series(values.astype(np.int64))
    # One slot more for code -1: missing labels index the trailing None.
    text = np.append(labels.astype(str).to_numpy(dtype=object), None)
    return text[codes]


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
