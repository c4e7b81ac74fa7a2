"""A runtime's loaded model versions stay bounded for the life of a served process."""

from __future__ import annotations


def test_runtime_keeps_only_the_model_versions_asked_for_last(tmp_path) -> None:
    """Loaded versions are bounded too: the most recently asked for stay (the champion
    is asked for at every batch), an older one is fetched again if it is needed."""
    from greenloop.config import load_config
    from greenloop.workspace import Workspace
    from tasks.runtime import KEPT_MODELS, Runtime
    from tests.conftest import make_frame, write_project

    config = write_project(tmp_path, make_frame(20, seed=0))
    rt = Runtime(load_config(config), Workspace(tmp_path), str(config))
    fetched: list[int] = []

    class Store:  # what Tracker.fetch_model answers: a loaded version
        def fetch_model(self, name: str, version: int, folder: object) -> str:
            fetched.append(version)
            return f"model {version}"

    rt.__dict__["tracker"] = Store()
    for version in range(1, KEPT_MODELS + 3):
        assert rt.model(version) == f"model {version}"
        rt.model(1)  # the champion, asked for again at every batch
    assert len(rt.models) == KEPT_MODELS and 1 in rt.models
    assert fetched == list(range(1, KEPT_MODELS + 3))  # the champion was never fetched twice
    rt.model(2)  # dropped by now: fetched again
    assert fetched[-1] == 2
