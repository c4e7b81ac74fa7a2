"""Crashes: the update process is SIGKILLed at a named point (GREENLOOP_FAULTS). After a
restart the champion alias points at a complete, loadable version, the batch is
processed (once), and the energy metered by the failed attempt stays in the ledger."""

from __future__ import annotations

import signal

import pytest

from tests.reliability.conftest import MODEL, Project, bootstrap

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a child process each

CASES = {
    # point: (status the batch is left in, phases the killed attempt had metered)
    "train": ("accepted", {"evaluate", "drift"}),
    "after_register": ("accepted", {"evaluate", "drift", "train"}),
    "alias": ("processed", {"evaluate", "drift", "train"}),
    "dvc": ("received", set()),
    "ingest": ("received", set()),
}


def energy_rows(p: Project, digest: str) -> list[str]:
    rows = p.ledger()._conn.execute("SELECT phase FROM energy WHERE model=? AND hash=? ORDER BY id",
                                    (MODEL, digest)).fetchall()
    return [r[0] for r in rows]


def check_consistent(p: Project) -> int:
    """Ledger champion == MLflow alias, and that version loads from MLflow's artifacts
    alone (not the local cache) and predicts."""
    import tempfile
    from pathlib import Path

    import mlflow

    from greenloop.model import TabularModel

    rt = p.runtime()
    champion = p.ledger().champion(MODEL)
    assert champion is not None
    assert rt.tracker.champion(MODEL) == champion
    mv = rt.tracker.client.get_model_version(MODEL, str(champion))
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tmp,
                                            tracking_uri=rt.tracking_uri)
        folder = next(Path(tmp).rglob("state_dict.pt")).parent
        model = TabularModel.load(folder)
        assert len(model.predict(p.batch(0))) == len(p.batch(0))
    return champion


@pytest.mark.parametrize("point", list(CASES))
def test_sigkill_then_restart(project: Project, point: str) -> None:
    bootstrap(project)
    ledger = project.ledger()
    champion_before = ledger.champion(MODEL)
    path = project.drop(project.batch(10), "crash.csv")
    from greenloop.data import content_hash

    digest = content_hash(path)

    child = project.spawn("ingest", str(path), faults=f"{point}:kill")
    out, _ = child.communicate(timeout=600)
    assert child.returncode == -signal.SIGKILL, out

    status, metered = CASES[point]
    row = ledger.batch(MODEL, digest)
    assert row is not None and row.status == status
    failed_attempt = energy_rows(project, digest)
    assert metered <= set(failed_attempt)
    if point != "alias":  # the killed attempt never reached the ledger's commit
        assert ledger.champion(MODEL) == champion_before
    assert project.runtime().tracker.champion(MODEL) == champion_before  # MLflow untouched

    code, out = project.cli("ingest", str(path))  # restart: the same file arrives again
    assert code == 0, out

    row = ledger.batch(MODEL, digest)
    assert row.status == "processed"
    versions = [v for v in ledger.versions(MODEL) if v["batch_hash"] == digest]
    assert len(versions) == 1  # processed once: one version in the record of truth
    assert energy_rows(project, digest)[: len(failed_attempt)] == failed_attempt  # kept
    assert check_consistent(project) == ledger.champion(MODEL)
    assert ledger.duplicates(MODEL) == (0 if status == "received" else 1)
