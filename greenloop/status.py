"""`greenloop status`: read from the ledger only (fast, works with no server up)."""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from greenloop.config import load_config
from greenloop.data import content_hash
from greenloop.ledger import Ledger
from greenloop.linger import gap_cpu_seconds
from greenloop.service import IdleCost, idle_cost
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


def unaccounted_arrivals(ledger: Ledger, model: str, dataset: str, ws: Workspace) -> list[Path]:
    """Files in data/landing/<dataset>/ whose content is neither a batch of `model` nor
    quarantined: arrivals that an ingest has not (yet) turned into a row. Files being
    written (names starting with a dot) are left out."""
    landing = ws.landing(dataset)
    if not landing.is_dir():
        return []
    known = ledger.accounted_hashes(model, dataset)
    files = sorted(p for p in landing.iterdir() if p.is_file() and not p.is_symlink()
                   and not p.name.startswith("."))
    return [p for p in files if content_hash(p) not in known]


def standing_cost(ledger: Ledger, idle: IdleCost | None = None) -> str:
    """The served mode's idle cost (greenloop/service.py), or why there is none. `idle`:
    already read from `ledger` by the caller (read here when not given)."""
    idle = idle if idle is not None else idle_cost(ledger)
    if idle is None:
        return "service: never served here (`greenloop serve` records its standing cost)"
    return (f"service: {idle.sessions} session(s), {idle.hours:.2f} h served, "
            f"{idle.batches} arrival(s); idle {idle.idle_kwh_per_hour * 1000:.3f} Wh per hour "
            f"({idle.idle_cpu_share_of_core * 100:.2f}% of a core), "
            f"{idle.idle_kwh_per_batch * 1000:.4f} Wh of idle per arrival"
            + _restart_price(idle))


def _restart_price(idle: IdleCost) -> str:
    """The start-up against the idle rate: how long an idle serve takes to cost a restart."""
    if idle.startup_cpu_seconds is None:
        return ""
    out = f"; start-up {idle.startup_cpu_seconds:.1f} CPU-s a session (median)"
    rate = idle.idle_cpu_share_of_core
    if rate > 0:  # NaN compares False too
        out += (f": idle past {idle.startup_cpu_seconds / rate / 60:.0f} min costs more than "
                f"a restart (`greenloop wake` stops serve then)")
    return out


def serve_or_wake(idle: IdleCost | None, received_at: list[float]) -> str | None:
    """Which of an always-on `serve` and `wake` costs less at the gaps this stream's
    files actually arrived with, from the measured idle rate and start-up (None: not
    enough measured). A projection over the recorded gaps, and said to be one."""
    if idle is None or idle.startup_cpu_seconds is None or not idle.idle_hours:
        return None
    times = sorted(t for t in received_at if t is not None)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    if not gaps:
        return None
    rate = idle.idle_cpu_share_of_core  # CPU-s per idle second
    costs = [gap_cpu_seconds(g, idle.startup_cpu_seconds, rate) for g in gaps]
    always_on, woken = sum(c[0] for c in costs), sum(c[1] for c in costs)
    better = ("`greenloop wake` costs less here" if woken < always_on * 0.95 else
              "an always-on `serve` costs the same or less here")
    return (f"arrival gaps: median {_duration(statistics.median(gaps))} over {len(gaps)}; "
            f"their quiet would cost {always_on / len(gaps):.2f} CPU-s per arrival always on, "
            f"{woken / len(gaps):.2f} with `wake` (projected from the measured idle rate and "
            f"start-up): {better}")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


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
    unaccounted = unaccounted_arrivals(ledger, name, cfg.name, ws)
    out.print("arrivals: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
              + f"; {ledger.duplicates(name)} duplicate(s) dropped; "
              f"{ledger.quarantine_count(cfg.name)} file(s) quarantined; "
              f"{len(unaccounted)} file(s) in landing with no ledger or quarantine row")
    for path in unaccounted[:last]:
        out.print(f"  not yet ingested: {path}")
    dead = ledger.dead_letters(name)
    if dead:
        t = Table(title=f"failed batches ({len(dead)}), set aside after their attempts; "
                        "`greenloop retry` puts them back")
        for col in ("seq", "attempts", "source", "error"):
            t.add_column(col)
        for d in dead:
            t.add_row(str(d["seq"]), str(d["attempts"]), str(d["source"] or ""),
                      str(d["error"] or "")[:120])
        out.print(t)
    t = Table(title=f"last {last} batches")
    for col in ("seq", "status", "decision", "reason", "quality before", "version"):
        t.add_column(col)
    for b in ledger.batches(name)[-last:]:
        q = "" if b.quality_before is None else f"{b.quality_before:.3f}"
        reason = b.reason or ""
        t.add_row(str(b.seq), b.status, b.decision or "", reason[:70], q, str(b.version or ""))
    out.print(t)
    idle = idle_cost(ledger)  # read once: the standing cost and the advice both use it
    out.print(standing_cost(ledger, idle))
    arrived = ledger.query("SELECT received_at FROM batches WHERE model=?", (name,))
    advice = serve_or_wake(idle, [r["received_at"] for r in arrived])
    if advice:
        out.print(advice)
    if history:
        t = Table(title="champion alias history")
        for col in ("when", "version", "previous", "reason"):
            t.add_column(col)
        import datetime as dt

        for a in ledger.alias_history(name):
            when = dt.datetime.fromtimestamp(a["at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            t.add_row(when, str(a["version"]), str(a["previous"] or ""), a["reason"] or "")
        out.print(t)
