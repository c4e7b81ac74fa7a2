"""The frame an ingest wrote is handed to the update only while its file still holds the
bytes DVC recorded; it equals what decoding that file gives; a changed or damaged file
is decoded (and fails) as if nothing had been kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greenloop.columnar import read_parquet
from greenloop.config import DataConfig
from greenloop.data import infer_schema, validate_batch
from tasks import handoff
from tasks.ingest import durable_write


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - DVC's content hash


def _validated(task: str, seed: int, rows: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    raw = pd.DataFrame({"x": rng.normal(size=rows), "n": rng.integers(0, 9, rows),
                        "empty": [np.nan] * rows, "city": rng.choice(["a", "b", None], rows),
                        "y": rng.choice([1, 2, None], rows) if task == "classification"
                        else rng.normal(size=rows)})
    cfg = DataConfig(path="x.csv", target="y", task=task, categorical=["city"], batch_rows=rows)
    return validate_batch(raw, infer_schema(raw.fillna({"empty": 0.0}), cfg), cfg)


def _written(tmp_path: Path, frame: pd.DataFrame, name: str = "b.parquet") -> tuple[Path, str]:
    path = tmp_path / name
    durable_write(frame, path)
    md5 = _md5(path)
    handoff.keep(md5, frame)
    return path, md5


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_kept_frame_is_what_the_file_decodes_to(tmp_path: Path, task: str) -> None:
    path, md5 = _written(tmp_path, _validated(task, 1))
    handed = handoff.load(path, md5)
    pd.testing.assert_frame_equal(handed, read_parquet(path), check_exact=True)
    handed.iloc[0, 0] = 1e9  # a caller's edit stays its own
    assert handoff.load(path, md5).iloc[0, 0] != 1e9


def test_a_file_changed_since_is_decoded_not_handed_over(tmp_path: Path) -> None:
    path, md5 = _written(tmp_path, _validated("classification", 1))
    other = _validated("classification", 2)
    durable_write(other, path)  # the same path, other bytes
    pd.testing.assert_frame_equal(handoff.load(path, md5), other)


def test_a_damaged_file_fails_as_before(tmp_path: Path) -> None:
    path, md5 = _written(tmp_path, _validated("classification", 1))
    path.write_bytes(b"PAR1 corrupted on disk")
    with pytest.raises(Exception, match="(?i)parquet|magic|size"):
        handoff.load(path, md5)


def test_without_a_recorded_md5_the_file_is_decoded(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _written(tmp_path, _validated("classification", 1))
    calls = []
    monkeypatch.setattr(handoff, "read_parquet", lambda data: calls.append(data) or "decoded")
    assert handoff.load(path, None) == "decoded" and calls == [path.read_bytes()]


def test_the_oldest_frames_are_dropped_beyond_the_cap(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _validated("classification", 1)
    monkeypatch.setattr(handoff, "MAX_KEPT_BYTES", int(frame.memory_usage(index=False).sum()) * 2)
    monkeypatch.setattr(handoff, "_kept", type(handoff._kept)())
    monkeypatch.setattr(handoff, "_kept_bytes", 0)
    md5s = [_written(tmp_path, _validated("classification", s), f"b{s}.parquet")[1]
            for s in range(4)]
    assert list(handoff._kept) == md5s[-2:]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_kept_frame_is_sized_as_pandas_sizes_it(task: str) -> None:
    frame = _validated(task, seed=3)
    assert handoff.nbytes(frame) == int(frame.memory_usage(index=False).sum())
