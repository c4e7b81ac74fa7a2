"""Per-model lock files: made where they are missing, one lock per file however named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from greenloop.locks import LockTimeout, file_lock, model_lock
from tests.conftest import held_by_another_thread


def test_a_lock_folder_removed_while_serving_is_made_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with model_lock(state, "m-gated", "update"):
        pass
    shutil.rmtree(state / "locks")  # e.g. a user cleaning state/ by hand between batches
    with model_lock(state, "m-gated", "update"):
        assert (state / "locks" / "m-gated.update.lock").is_file()


def test_two_names_of_one_file_share_its_lock(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    direct, linked = tmp_path / "real" / "x.lock", tmp_path / "alias" / "x.lock"
    with held_by_another_thread(file_lock(direct)):
        for _ in range(2):  # the second time through the name already seen
            with pytest.raises(LockTimeout, match="held by another thread"), \
                    file_lock(linked, timeout_s=0.1):
                pass
    with file_lock(linked, timeout_s=1):  # released: the other name takes it
        pass
