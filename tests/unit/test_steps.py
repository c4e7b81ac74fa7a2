"""Fine-tune replay rows: the same rows as sampling the concatenated history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenloop.steps import concat, sample_rows


def _frames() -> list[pd.DataFrame]:
    rng = np.random.default_rng(0)
    return [pd.DataFrame({"x": rng.normal(size=k), "c": rng.integers(0, 5, size=k)})
            for k in (5, 0, 17, 3, 40)]


@pytest.mark.parametrize("n", [1, 10, 64, 65])
@pytest.mark.parametrize("seed", [0, 3, 99])
def test_sample_rows_equals_sampling_the_concatenated_pool(n: int, seed: int) -> None:
    frames = _frames()
    expected = concat(frames).sample(n=n, random_state=seed).reset_index(drop=True)
    pd.testing.assert_frame_equal(sample_rows(frames, n, seed), expected)


def test_sample_rows_caps_at_the_pool_and_handles_nothing() -> None:
    frames = _frames()
    assert len(sample_rows(frames, 1000, 0)) == 65  # every row once, no repeats
    assert sample_rows(frames, 1000, 0)["x"].is_unique
    assert sample_rows(frames, 0, 0).empty
    assert sample_rows([], 10, 0).empty
