"""A command that reads the configured source says so plainly when it is not there,
before any flow starts (no traceback from inside a Prefect flow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from greenloop_cli.main import app


@pytest.mark.parametrize("command", ["run", "compare"])
def test_a_missing_source_is_named_with_the_home_it_was_looked_for_in(
        tmp_path: Path, command: str) -> None:
    config = tmp_path / "configs" / "x.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"name": "x", "data": {
        "path": "data/sources/x.csv", "target": "y", "task": "classification",
        "batch_rows": 100}}))
    result = CliRunner().invoke(app, [command, "--config", str(config), "--home",
                                      str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"no file at {tmp_path / 'data' / 'sources' / 'x.csv'}" in result.output
    assert str(tmp_path) in result.output and "Traceback" not in result.output
