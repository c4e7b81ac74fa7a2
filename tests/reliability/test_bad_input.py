"""Bad input, one test each: `greenloop ingest` exits non-zero with a one-line reason,
the file is quarantined with that reason, and the champion does not move."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reliability.conftest import BATCH_ROWS, MODEL, NAME, Project

pytestmark = pytest.mark.integration


def reject(p: Project, path: str, expected: str) -> str:
    """Ingest `path`, check every promise of a rejection, return the reason."""
    ledger = p.ledger()
    champion = ledger.champion(MODEL)
    alias = p.runtime().tracker.champion(MODEL)
    batches = len(ledger.batches(MODEL))
    quarantined = ledger.quarantine_count(NAME)

    code, out = p.cli("ingest", path)

    assert code != 0, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert expected in errors[0], errors[0]
    reason = errors[0].removeprefix("error: rejected: ")
    assert "\n" not in reason and len(reason) < 300
    assert ledger.quarantine_count(NAME) == quarantined + 1
    row = ledger._conn.execute("SELECT reason FROM quarantine ORDER BY id DESC LIMIT 1").fetchone()
    assert row[0] == reason
    folder = p.home / "data" / "quarantine" / NAME
    reasons = {f.read_text().strip() for f in folder.glob("*.reason.txt")}
    assert reason in reasons
    assert ledger.champion(MODEL) == champion  # record of truth unchanged
    assert p.runtime().tracker.champion(MODEL) == alias == champion  # and MLflow too
    assert len(ledger.batches(MODEL)) == batches  # nothing reached the pipeline
    return reason


def moved_to_quarantine(p: Project, name: str) -> bool:
    return (p.home / "data" / "quarantine" / NAME / name).is_file() and not (
        p.landing / name).exists()


def test_empty_file(served: Project) -> None:
    served.landing.mkdir(parents=True, exist_ok=True)
    (served.landing / "empty.csv").write_bytes(b"")
    reject(served, str(served.landing / "empty.csv"), "empty file")
    assert moved_to_quarantine(served, "empty.csv")


def test_header_only(served: Project) -> None:
    path = served.drop(served.batch(50).iloc[:0], "header.csv")
    reject(served, str(path), "no rows")
    assert moved_to_quarantine(served, "header.csv")


def test_missing_target(served: Project) -> None:
    path = served.drop(served.batch(51).drop(columns="y"), "notarget.csv")
    reject(served, str(path), "missing target: y")


def test_missing_feature(served: Project) -> None:
    path = served.drop(served.batch(52).drop(columns="x2"), "nofeature.csv")
    reject(served, str(path), "missing column(s): x2")


def test_unknown_column_rejected(served: Project) -> None:
    path = served.drop(served.batch(53).assign(extra=1.0), "extra.csv")
    reject(served, str(path), "unknown column(s): extra")


def test_unknown_column_dropped_when_configured(served: Project) -> None:
    """data.unknown_columns: drop -> accepted without the column (same model and ledger)."""
    import yaml

    cfg = yaml.safe_load(served.config.read_text())
    cfg["data"]["unknown_columns"] = "drop"
    dropping = served.config.with_name("rel-drop.yaml")
    dropping.write_text(yaml.safe_dump(cfg))
    p = Project(served.home, dropping)
    path = p.drop(p.batch(54).assign(extra=1.0), "extra-ok.csv")
    code, out = p.cli("ingest", str(path))
    assert code == 0, out
    row = p.ledger().batches(MODEL)[-1]
    assert row.status == "processed"
    import pandas as pd

    accepted = pd.read_parquet(p.home / row.accepted_path)
    assert "extra" not in accepted.columns and len(accepted) == BATCH_ROWS


def test_text_in_numeric_column(served: Project) -> None:
    frame = served.batch(55).astype({"x3": object})
    frame.loc[7, "x3"] = "twelve"
    reject(served, str(served.drop(frame, "text.csv")), "text in numeric column 'x3'")


def accept(p: Project, path: str) -> tuple[str, int]:
    """Ingest `path`: a batch a user would call valid is accepted and processed."""
    ledger = p.ledger()
    quarantined = ledger.quarantine_count(NAME)
    code, out = p.cli("ingest", path)
    assert code == 0, out
    assert ledger.quarantine_count(NAME) == quarantined
    row = ledger.batches(MODEL)[-1]
    assert row.status == "processed", (row, out)
    return row.hash, row.seq


def test_a_numeric_column_empty_in_one_batch_is_accepted(served: Project) -> None:
    """Issue 11: a sensor silent for one batch is imputed, not a reason to drop the batch
    (it used to be rejected as `column(s) entirely empty (all NaN)`)."""
    frame = served.batch(56).assign(x4=np.nan)
    accept(served, str(served.drop(frame, "allnan.csv")))


def test_rows_with_a_missing_target_are_kept_and_counted(served: Project) -> None:
    """Issue 11: an unlabelled row is predicted and drift-checked, left out of scoring and
    training, and counted (ledger, summary) — not a reason to reject the labelled rows."""
    frame = served.batch(57)
    frame.loc[[3, 7], "y"] = None
    digest, _ = accept(served, str(served.drop(frame, "nantarget.csv")))
    row = served.ledger().batch(MODEL, digest)
    assert row is not None and row.rows == len(frame) and row.labelled_rows == len(frame) - 2
    assert row.scored_rows == len(frame) - 2


def test_inf_in_target(served: Project) -> None:
    frame = served.batch(58).astype({"y": object})
    frame.loc[3, "y"] = float("inf")
    reject(served, str(served.drop(frame, "inftarget.csv")), "infinite value")


def test_neither_csv_nor_parquet(served: Project) -> None:
    served.landing.mkdir(parents=True, exist_ok=True)
    path = served.landing / "batch.json"
    path.write_text(served.batch(59).to_json())
    reject(served, str(path), "not a CSV or Parquet file")


def test_a_gzipped_csv_is_accepted(served: Project) -> None:
    """Exports are often compressed: `.csv.gz` (or .bz2, .xz, a one-file .zip) is read."""
    served.landing.mkdir(parents=True, exist_ok=True)
    path = served.landing / "batch-62.csv.gz"
    served.batch(62).to_csv(path, index=False)  # gzip, inferred from the name
    before = len(served.ledger().batches(MODEL))
    code, out = served.cli("ingest", str(path))
    assert code == 0, out
    assert len(served.ledger().batches(MODEL)) == before + 1


def test_truncated_parquet(served: Project) -> None:
    path = served.drop(served.batch(60), "cut.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reject(served, str(path), "unreadable parquet")


def test_csv_cut_mid_row(served: Project) -> None:
    path = served.drop(served.batch(61), "cut.csv")
    text = path.read_text()
    path.write_text(text[: text.rindex(",", 0, len(text) - 40)])  # stops inside a row
    reject(served, str(path), "truncated CSV")


def test_batch_over_size_limit(served: Project) -> None:
    frame = make_big(served)
    reject(served, str(served.drop(frame, "huge.csv")), "over the limit of 1000")


def make_big(p: Project):  # noqa: ANN201 - a DataFrame
    import pandas as pd

    return pd.concat([p.batch(70 + i) for i in range(11)], ignore_index=True)


def test_path_traversal_out_of_landing(served: Project) -> None:
    sneaky = f"data/landing/{NAME}/../../sources/{NAME}/source.csv"
    reject(served, sneaky, "outside")
    assert (served.home / "data" / "sources" / NAME / "source.csv").is_file()  # untouched


def test_path_outside_project(served: Project) -> None:
    reject(served, "../../../../../../etc/passwd", "outside")


def test_symlink_in_landing(served: Project) -> None:
    served.landing.mkdir(parents=True, exist_ok=True)
    link = served.landing / "link.csv"
    link.symlink_to(served.home / "data" / "sources" / NAME / "source.csv")
    reject(served, str(link), "symbolic links are not accepted")
    assert (served.home / "data" / "sources" / NAME / "source.csv").is_file()


def test_a_relative_path_is_read_from_the_shell_folder(served: Project,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`greenloop ingest landing/x.csv --home H`, typed in H's parent: the file is found."""
    dropped = served.drop(served.batch(91), "relative.csv")
    monkeypatch.chdir(served.home.parent)
    code, out = served.cli("ingest", str(dropped.relative_to(served.home.parent)))
    assert code == 0 and "batch" in out and "error" not in out, out


def test_service_keeps_running_after_bad_input(served: Project) -> None:
    """After every rejection above, the next good batch is processed normally."""
    before = len(served.ledger().batches(MODEL, ("processed",)))
    code, out = served.cli("ingest", str(served.drop(served.batch(90), "good.csv")))
    assert code == 0, out
    assert len(served.ledger().batches(MODEL, ("processed",))) == before + 1


def test_status_reports_quarantine_and_duplicates(served: Project) -> None:
    ledger = served.ledger()
    code, out = served.cli("status")
    assert code == 0, out
    assert f"{ledger.quarantine_count(NAME)} file(s) quarantined" in out
    assert f"{ledger.duplicates(MODEL)} duplicate(s) dropped" in out
