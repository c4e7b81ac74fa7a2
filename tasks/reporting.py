"""Terminal output: progress bars and summary tables (rich), and JSON reports."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

T = TypeVar("T")
console = Console(stderr=True)


def progress(items: Sequence[T], label: str) -> Iterator[T]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        yield from bar.track(items, total=len(items), description=label)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=2) + "\n")
    tmp.replace(path)
    return path


def _clean(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def summary_table(s: dict[str, Any]) -> Table:
    t = Table(title=f"greenloop · {s['dataset']} · policy {s['policy']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    d = s["decisions"]
    t.add_row("batches",
              f"{s['batches']} ({s['update_batches']} after bootstrap), {s['rows']} rows")
    t.add_row("decisions", f"skip {d['skip']} · fine-tune {d['finetune']} · retrain {d['retrain']}")
    t.add_row(f"prequential {s['metric']}", f"{s['prequential']:.4f}")
    e, c = s["energy_kwh"], s["cpu_seconds"]
    for phase in ("ingest", "drift", "train", "evaluate", "overhead", "orchestration", "total"):
        t.add_row(f"energy · {phase}", f"{e[phase] * 1000:.4f} Wh   {c[phase]:.1f} CPU-s")
    t.add_row("wall time", f"{s['wall_seconds']:.1f} s")
    t.add_row("emissions", f"{s['emissions_kg'] * 1000:.3f} g CO2e")
    m = s["mlflow"]
    t.add_row("champion", f"{m['registered_model']} v{m['champion_version']} (alias 'champion')")
    t.add_row("MLflow", f"{m['tracking_uri']} · experiment {m['experiment']}")
    t.add_row("measured by", s["energy_method"])
    return t


def show(tables: Iterable[Table]) -> None:
    out = Console()
    for t in tables:
        out.print(t)
