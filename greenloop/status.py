"""`greenloop status`: read from the ledger only (fast, works with no server up)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from greenloop.config import load_config
from greenloop.ledger import Ledger
from greenloop.workspace import Workspace


def lineage(ledger: Ledger, model: str, version: int) -> list[dict]:
    chain, seen = [], set()
    v: int | None = version
    while v is not None and v not in seen:
        seen.add(v)
        info = ledger.version(model, v)
        if info is None:
            break
        chain.append(info)
        v = info["parent"]
    return chain


def render_status(config: str, policy: str | None, home: str | None, history: bool,
                  last: int) -> None:
    cfg = load_config(config)
    name = f"{cfg.name}-{policy or cfg.policy.name}"
    ws = Workspace.from_env(home)
    out = Console()
    if not ws.ledger_path.exists():
        out.print(f"no ledger at {ws.ledger_path}: nothing has run here yet")
        return
    ledger = Ledger(ws.ledger_path)
    champ = ledger.champion(name)
    out.print(f"[bold]{name}[/bold]: champion = "
              + (f"version {champ}" if champ is not None else "none yet"))
    if champ is not None:
        t = Table(title="lineage of the champion (newest first)")
        for col in ("version", "decision", "reason", "energy Wh", "lineage Wh"):
            t.add_column(col)
        for v in lineage(ledger, name, champ):
            t.add_row(str(v["version"]), v["decision"], v["reason"] or "",
                      f"{(v['energy_kwh'] or 0) * 1000:.4f}",
                      f"{(v['lineage_energy_kwh'] or 0) * 1000:.4f}")
        out.print(t)
    bill = ledger.energy_by_phase(name)
    total = sum(v["energy_kwh"] or 0 for k, v in bill.items() if k != "run")
    out.print(f"energy bill (all phases, all attempts): {total * 1000:.4f} Wh")
    counts = ledger.status_counts(name)
    out.print("arrivals: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
              + f"; {ledger.duplicates(name)} duplicate(s) dropped; "
              f"{ledger.quarantine_count(cfg.name)} file(s) quarantined")
    t = Table(title=f"last {last} batches")
    for col in ("seq", "status", "decision", "reason", "quality before", "version"):
        t.add_column(col)
    for b in ledger.batches(name)[-last:]:
        q = "" if b.quality_before is None else f"{b.quality_before:.3f}"
        reason = b.reason or ""
        t.add_row(str(b.seq), b.status, b.decision or "", reason[:70], q, str(b.version or ""))
    out.print(t)
    if history:
        t = Table(title="champion alias history")
        for col in ("when", "version", "previous", "reason"):
            t.add_column(col)
        import datetime as dt

        for a in ledger.alias_history(name):
            when = dt.datetime.fromtimestamp(a["at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            t.add_row(when, str(a["version"]), str(a["previous"] or ""), a["reason"] or "")
        out.print(t)
