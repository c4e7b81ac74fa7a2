"""The core package never imports Prefect, MLflow or the packages built on it (checked on
the source, by AST): greenloop/ -> nothing of ours outside it, so there is no cycle."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "greenloop"
BANNED = {"prefect", "mlflow", "flows", "tasks", "greenloop_cli"}


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def offenders(root: Path) -> dict[str, set[str]]:
    found = {str(f.relative_to(root)): imported_roots(f.read_text()) & BANNED
             for f in sorted(root.rglob("*.py"))}
    return {k: v for k, v in found.items() if v}


def test_core_imports_no_orchestration_tracking_or_face() -> None:
    assert len(list(CORE.rglob("*.py"))) > 10
    assert offenders(CORE) == {}


def test_the_check_sees_a_lazy_import_of_flows_or_tasks(tmp_path: Path) -> None:
    """A control: imports inside functions count too, so the check can fail."""
    (tmp_path / "bad.py").write_text("def f():\n    from flows.update import update\n"
                                     "    import tasks.runtime\n")
    assert offenders(tmp_path) == {"bad.py": {"flows", "tasks"}}
