"""The core package never imports Prefect or MLflow (checked on the source, by AST)."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "greenloop"
BANNED = {"prefect", "mlflow"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_has_no_orchestration_or_tracking_imports() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10
    offenders = {str(f.relative_to(CORE)): imported_roots(f) & BANNED for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}
