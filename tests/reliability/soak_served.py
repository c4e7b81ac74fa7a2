"""Soak of the served path: `greenloop serve` with files dropped into data/landing/, random
kills at every fault point, poison batches, broken files, duplicates, MLflow outages and
one deleted registered model; then every arrival must be accounted for exactly once.

    python -m tests.reliability.soak_served --home /tmp/soak-served --arrivals 300 --seed 1

What the driver does, as an operator's machinery would:
- a throwaway project home (bundled sources and configs), an MLflow tracking server it
  starts (127.0.0.1, sqlite backend, as tests/reliability/test_outage.py does), the home
  bootstrapped against it (`greenloop bootstrap`);
- `greenloop serve` as a child with GREENLOOP_FAULTS (random SIGKILLs at the fault points),
  restarted whenever it dies, as a supervisor would. Like systemd's control group, the
  driver is a child subreaper: what a killed serve leaves running (its Prefect server,
  started in its own session) is stopped before the restart;
- arrivals cut from Elec2 after the bootstrap rows, dropped one by one (written to a
  temporary name, then renamed), each awaited until accounted for (or a timeout):
  good batches, duplicates (an earlier good file's bytes under a new name), broken files
  (quarantined with a reason), poison batches (accepted, then their accepted Parquet is
  corrupted on disk while another update holds the model's update lock, so every
  attempt fails: dead-lettered after the attempt cap, and the stream moves on);
- MLflow outages: the tracking server is stopped, arrivals keep coming, then it is
  restarted;
- once, the registered model is deleted through MlflowClient: the next update must refuse
  (the batch stays `accepted`, the ledger's lineage unchanged); then the recovery that
  greenloop documents is applied: MLflow's database is restored (from a backup taken just
  before, the pipeline idle) and serve restarted;
- at the end serve is stopped with SIGTERM and the invariants are checked (see
  `invariants`). Prints one JSON report.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tests.reliability.soak import QUIET, prepare_home
from tests.reliability.test_outage import MlflowServer, free_port

CONFIG = "configs/elec2.yaml"
DATASET = "elec2"
MODEL = "elec2-gated"
BOOTSTRAP_ROWS = 4 * 336  # the bootstrap replays the first 4 stream batches of 336 rows
MAX_BATCH_ROWS = 336
ARRIVAL_TIMEOUT_S = 240.0
OUTAGE_ARRIVAL_WAIT_S = 40.0  # > the ~28 s an update takes to give up on a dead server
BROKEN_KINDS = ("truncated", "no_target", "infinite", "garbage", "bad_number")
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Arrival:
    index: int
    name: str
    kind: str  # good | duplicate | broken | poison
    digest: str = ""
    detail: str = ""  # the broken kind, or the name a duplicate copies
    outcome: str = ""  # filled by `account`


@dataclass
class Soak:
    home: Path
    seed: int
    faults: str
    serve_log: Path
    mlflow: MlflowServer
    port: int
    serve: subprocess.Popen[bytes] | None = None
    others: set[int] = field(default_factory=lambda: children_of(os.getpid()))
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    outages: list[dict[str, Any]] = field(default_factory=list)
    deletion: dict[str, Any] = field(default_factory=dict)
    poisons: list[dict[str, Any]] = field(default_factory=list)
    orphans_stopped: int = 0
    nudges: int = 0

    @property
    def landing(self) -> Path:
        return self.home / "data" / "landing" / DATASET

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "GREENLOOP_HOME",
                            "GREENLOOP_FAULTS", "PREFECT_LOGGING_LEVEL")}
        return {**env, **QUIET, "MLFLOW_TRACKING_URI": self.mlflow.url,
                "PREFECT_HOME": str(self.home / ".prefect")}

    # -- the supervisor ------------------------------------------------------------------
    def start_serve(self) -> None:
        env = {**self.env(), "GREENLOOP_FAULTS": self.faults} if self.faults else self.env()
        cmd = [sys.executable, "-m", "greenloop_cli", "serve", "--config", CONFIG, "--home",
               str(self.home), "--port", str(self.port), "--poll-seconds", "0.5"]
        with self.serve_log.open("ab") as out:
            out.write(f"\n=== start {self.starts + 1} (GREENLOOP_FAULTS={self.faults})\n".encode())
            out.flush()
            self.serve = subprocess.Popen(cmd, cwd=self.home, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        self.starts += 1

    def supervise(self) -> None:
        """Restart serve if it died (after stopping what it left running)."""
        if self.serve is not None and self.serve.poll() is None:
            return
        if self.serve is not None:
            self.exits.append(int(self.serve.returncode))
            self.stop_orphans()
            time.sleep(1.0)  # a supervisor's restart delay
        self.start_serve()

    def stop_orphans(self) -> None:
        """Children re-parented to this subreaper other than the servers it runs: what a
        dead serve left behind (its Prefect server). systemd stops a dead unit's control
        group the same way."""
        keep = {p.pid for p in (self.serve, self.mlflow.proc) if p is not None} | self.others
        for pid in children_of(os.getpid()) - keep:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.orphans_stopped += 1

    def stop_serve(self) -> int | None:
        """SIGTERM, as `systemctl stop` would; returns serve's exit code."""
        if self.serve is None:
            return None
        if self.serve.poll() is None:
            os.kill(self.serve.pid, signal.SIGTERM)
            try:
                self.serve.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.serve.pid, signal.SIGKILL)
                self.serve.wait(10)
        code = int(self.serve.returncode)
        self.stop_orphans()
        return code

    def wait(self, predicate: Any, timeout_s: float, poll_s: float = 0.5) -> bool:
        """Poll `predicate` while supervising serve; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.supervise()
            if predicate():
                return True
            time.sleep(poll_s)
        return False


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


# -- the ledger, read-only ----------------------------------------------------------------
def query(home: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    path = home / "state" / "ledger.sqlite"
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def batch_row(home: Path, digest: str) -> tuple[Any, ...] | None:
    rows = query(home, "SELECT status, source, attempts, error, seq FROM batches WHERE model=? "
                       "AND hash=?", (MODEL, digest))
    return rows[0] if rows else None


def duplicate_sources(home: Path) -> Counter[str]:
    return Counter(Path(s).name for (s,) in query(
        home, "SELECT source FROM duplicates WHERE model=?", (MODEL,)))


def quarantine_sources(home: Path) -> dict[str, str]:
    return {Path(s).name: r for s, r in query(
        home, "SELECT source, reason FROM quarantine WHERE dataset=?", (DATASET,))}


def account(home: Path, a: Arrival) -> str:
    """Where one dropped file ended: processed, failed (dead-lettered), duplicate,
    quarantined, or not yet (pending, received, landing, ...)."""
    if a.name in quarantine_sources(home):
        return "quarantined"
    row = batch_row(home, a.digest)
    if row is None:
        return "landing" if (home / "data" / "landing" / DATASET / a.name).exists() else "lost"
    status, source = row[0], Path(row[1] or "").name
    if source != a.name:
        return "duplicate" if duplicate_sources(home)[a.name] else "unreported"
    return status  # processed | failed | accepted | received


TERMINAL = ("processed", "failed", "duplicate", "quarantined")


def pending_batches(home: Path) -> int:
    return int(query(home, "SELECT COUNT(*) FROM batches WHERE model=? AND status IN "
                           "('received','accepted')", (MODEL,))[0][0])


# -- arrivals -------------------------------------------------------------------------------
def plan(n: int, rng: random.Random) -> list[str]:
    """Kinds of the n arrivals: mostly good, a few duplicates, broken files and poison
    batches, shuffled (the first two are good, so a duplicate always has an original)."""
    dup, broken, poison = max(2, round(n * 0.08)), max(2, round(n * 0.05)), max(1, n // 50)
    kinds = ["duplicate"] * dup + ["broken"] * broken + ["poison"] * poison
    kinds += ["good"] * (n - 2 - len(kinds))
    rng.shuffle(kinds)
    return ["good", "good", *kinds]


def source_rows(home: Path) -> pd.DataFrame:
    frame = pd.read_csv(home / "data" / "sources" / "elec2" / "electricity.csv")
    return frame.iloc[BOOTSTRAP_ROWS:].reset_index(drop=True)


def broken_bytes(kind: str, good: bytes) -> bytes:
    lines = good.decode().splitlines()
    header, rows = lines[0], lines[1:]
    if kind == "truncated":  # cut mid-row: the last line has fewer fields, no line end
        return ("\n".join([header, *rows[:5]]) + "\n" + rows[5][: len(rows[5]) // 2]).encode()
    if kind == "no_target":
        cols = header.split(",")
        keep = [i for i, c in enumerate(cols) if c != "class"]
        out = [",".join(line.split(",")[i] for i in keep) for line in [header, *rows[:20]]]
        return ("\n".join(out) + "\n").encode()
    if kind == "infinite":
        cols = header.split(",")
        at = cols.index("nswprice")
        first = rows[0].split(",")
        first[at] = "inf"
        return ("\n".join([header, ",".join(first), *rows[1:20]]) + "\n").encode()
    if kind == "bad_number":  # a word in a numeric column
        cols = header.split(",")
        at = cols.index("nswdemand")
        first = rows[0].split(",")
        first[at] = "lots"
        return ("\n".join([header, ",".join(first), *rows[1:20]]) + "\n").encode()
    return b"\x00\x9f\x92\x96 not a table \xff" * 40  # garbage


def drop_bytes(landing: Path, name: str, data: bytes) -> None:
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, landing / name)


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# -- events -------------------------------------------------------------------------------
def drop_poison(s: Soak, a: Arrival, data: bytes) -> None:
    """Accepted, then its accepted Parquet corrupted on disk before any update reads it:
    the driver holds the model's update lock (as a concurrent update would) meanwhile."""
    from greenloop.locks import model_lock

    # serve runs one arrival at a time: holding the lock while an earlier
    # arrival's update waits for it would stall both, so wait until serve is idle.
    s.wait(lambda: worker_idle(s), ARRIVAL_TIMEOUT_S)
    with model_lock(s.home / "state", MODEL, "update"):
        drop_bytes(s.landing, a.name, data)
        ok = s.wait(lambda: (batch_row(s.home, a.digest) or ("",))[0] == "accepted", 90)
        path = query(s.home, "SELECT accepted_path FROM batches WHERE model=? AND hash=?",
                     (MODEL, a.digest))
        if ok and path and path[0][0]:
            (s.home / path[0][0]).write_bytes(b"PAR1 corrupted on disk")
        s.poisons.append({"arrival": a.index, "accepted": ok, "corrupted": bool(ok and path)})


def worker_idle(s: Soak) -> bool:
    """The current serve is up (its watcher runs), every arrival task it started has
    finished (its log says so), and no batch is pending. Up matters: a serve still
    starting takes the model's update lock to reconcile, so a driver that took the lock
    first (drop_poison) would keep it from ever ingesting the file it waits for."""
    log = s.serve_log.read_text(errors="replace").rsplit("\n=== start ", 1)[-1]
    if "watching " not in log:
        return False
    lines = log.splitlines()  # serve's own lines, printed whatever Prefect's log level
    started = sum("arrived: " in line for line in lines)  # handed to the arrival thread
    ended = sum(line.startswith(("done: ", "arrival failed: ")) for line in lines)
    return started <= ended and pending_batches(s.home) == 0


def settled(s: Soak, a: Arrival, starts: int) -> bool:
    """The arrival is accounted for; or serve was killed meanwhile and has started again
    with the batch pending (`received`/`accepted`): the next arrival's update processes
    it, as it would in service, so the soak moves on."""
    where = account(s.home, a)
    if where in TERMINAL:
        return True
    restarted = s.starts > starts and "watching " in s.serve_log.read_text(
        errors="replace").rsplit("\n=== start ", 1)[-1]
    return restarted and where in ("received", "accepted")


def outage_start(s: Soak) -> dict[str, Any]:
    s.mlflow.stop()
    return {"down_at": time.monotonic(), "arrivals": 0}


def outage_end(s: Soak, o: dict[str, Any]) -> None:
    s.mlflow.start()
    down_s = time.monotonic() - o.pop("down_at")
    s.outages.append({**o, "down_seconds": round(down_s, 1)})


def delete_registered_model(s: Soak, arrivals: list[Arrival], data_of: dict[str, bytes]
                            ) -> None:
    """Delete the registered model mid-run; the next update must refuse; then restore
    MLflow's database (the documented recovery) and restart serve."""
    from mlflow import MlflowClient

    quiet = s.wait(lambda: worker_idle(s), ARRIVAL_TIMEOUT_S)  # no version in flight
    versions_before = query(s.home, "SELECT version, batch_hash, run_id FROM versions WHERE "
                                    "model=? ORDER BY version", (MODEL,))
    db = s.mlflow.folder / "server.db"
    backup = db.with_name("server.db.backup")
    with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    MlflowClient(tracking_uri=s.mlflow.url).delete_registered_model(MODEL)
    refused = []
    for a in arrivals:
        drop_bytes(s.landing, a.name, data_of[a.name])
        s.wait(lambda a=a, n=s.starts: refused_or_done(s, a, n), ARRIVAL_TIMEOUT_S)
        row = batch_row(s.home, a.digest)
        if a.kind == "good" and row is not None:
            refused.append({"arrival": a.index, "status": row[0], "attempts": row[2],
                            "error": (row[3] or "")[:160]})
    versions_after = query(s.home, "SELECT version, batch_hash, run_id FROM versions WHERE "
                                   "model=? ORDER BY version", (MODEL,))
    s.stop_serve()  # the operator: stop the service, restore MLflow's database, start again
    s.mlflow.stop()
    shutil.copyfile(backup, db)
    s.mlflow.start()
    s.start_serve()
    s.deletion = {"quiet_before": quiet, "ledger_versions": len(versions_before),
                  "lineage_unchanged": versions_before == versions_after,
                  "refused_updates": refused,
                  "recovery": "restored MLflow's database from a backup taken before the "
                              "deletion (pipeline idle), restarted serve"}


def refused_or_done(s: Soak, a: Arrival, starts: int) -> bool:
    """Accounted for; or pending with its update refused (the error in the ledger, or its
    arrival task failed: a serve started after the deletion fails in `reconcile`, before
    any attempt); or pending after serve was killed and started again."""
    where = account(s.home, a)
    if where in TERMINAL or settled(s, a, starts):
        return True
    row = batch_row(s.home, a.digest)
    failed = f"Task run 'arrival-{Path(a.name).stem}' - Finished in state Failed"
    return where == "accepted" and bool((row and row[3]) or failed in s.serve_log.read_text(
        errors="replace"))


# -- the soak -----------------------------------------------------------------------------
def bootstrap(s: Soak) -> None:
    cmd = [sys.executable, "-m", "greenloop_cli", "bootstrap", "--config", CONFIG, "--home",
           str(s.home)]
    with (s.home / "bootstrap.log").open("ab") as out:
        rc = subprocess.run(cmd, cwd=s.home, env=s.env(), stdout=out, stderr=subprocess.STDOUT,
                            check=False).returncode
    if rc != 0:
        raise RuntimeError(f"bootstrap failed ({rc}): see {s.home / 'bootstrap.log'}")


def make_arrivals(home: Path, n: int, rng: random.Random) -> tuple[list[Arrival],
                                                                   dict[str, bytes]]:
    kinds = plan(n, rng)
    goods = sum(k in ("good", "poison") for k in kinds)
    rows = source_rows(home)
    size = min(MAX_BATCH_ROWS, len(rows) // goods)
    arrivals, data_of, originals = [], {}, []
    cut = 0
    for i, kind in enumerate(kinds, start=1):
        name = f"arrival-{i:04d}-{kind}.csv"
        if kind in ("good", "poison"):
            data = rows.iloc[cut * size:(cut + 1) * size].to_csv(index=False).encode()
            cut += 1
            detail = ""
            if kind == "good":
                originals.append(name)
        elif kind == "duplicate":
            detail = rng.choice(originals)
            data = data_of[detail]
        else:
            detail = BROKEN_KINDS[sum(a.kind == "broken" for a in arrivals) % len(BROKEN_KINDS)]
            data = broken_bytes(detail, rows.iloc[:40].to_csv(index=False).encode())
        data_of[name] = data
        arrivals.append(Arrival(i, name, kind, sha256(data), detail))
    return arrivals, data_of


def schedule(n: int, rng: random.Random) -> tuple[set[int], int]:
    """Arrival indices that start an MLflow outage (one per 75 arrivals, at least one),
    and the index at which the registered model is deleted."""
    outages = max(1, n // 75)
    starts = {int(n * (k + 0.5) / (outages + 1)) + rng.randint(0, 3) for k in range(outages)}
    return starts, int(n * 0.6)


def run_soak(home: Path, arrivals_n: int, seed: int, faults: str, outage_arrivals: int = 3,
             min_outage_s: float = 20.0) -> dict[str, Any]:
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the servers
    rng = random.Random(seed)
    prepare_home(home)
    (home / "mlflow").mkdir(exist_ok=True)
    s = Soak(home, seed, faults, home / "serve.log", MlflowServer(home / "mlflow", free_port()),
             free_port())
    s.mlflow.start()
    try:
        bootstrap(s)
        arrivals, data_of = make_arrivals(home, arrivals_n, rng)
        outage_at, delete_at = schedule(arrivals_n, rng)
        s.start_serve()
        i = 0
        while i < len(arrivals):
            a = arrivals[i]
            if a.index == delete_at:
                batch = [x for x in arrivals[i:i + 2] if x.kind != "poison"] or [a]
                delete_registered_model(s, batch, data_of)
                i += len(batch)
                continue
            if a.index in outage_at:
                o = outage_start(s)
                batch = [x for x in arrivals[i:i + outage_arrivals] if x.kind != "poison"]
                for x in batch:
                    drop_bytes(s.landing, x.name, data_of[x.name])
                    # Bounded: a serve killed now cannot start again until MLflow is
                    # back (it opens its session run); its start rescans landing then.
                    s.wait(lambda x=x: account(s.home, x) in (*TERMINAL, "accepted"),
                           OUTAGE_ARRIVAL_WAIT_S)
                    o["arrivals"] += 1
                s.wait(lambda: False, max(0.0, min_outage_s - (time.monotonic() - o["down_at"])))
                outage_end(s, o)
                i += max(1, len(batch))
                continue
            starts = s.starts
            if a.kind == "poison":
                drop_poison(s, a, data_of[a.name])
            else:
                drop_bytes(s.landing, a.name, data_of[a.name])
            s.wait(lambda a=a, n=starts: settled(s, a, n), ARRIVAL_TIMEOUT_S)
            i += 1
        settle(s, arrivals)
        stop_code = s.stop_serve()
        report = invariants(s, arrivals)
    finally:
        if s.serve is not None and s.serve.poll() is None:
            s.stop_serve()
        s.mlflow.stop()
        s.stop_orphans()
    kills = sum(code == -signal.SIGKILL for code in s.exits)
    return {
        "arrivals": arrivals_n, "seed": seed, "faults": faults,
        "arrivals_by_kind": dict(Counter(a.kind for a in arrivals)),
        "broken_by_kind": dict(Counter(a.detail for a in arrivals if a.kind == "broken")),
        "outcomes_by_kind": {k: dict(Counter(a.outcome for a in arrivals if a.kind == k))
                             for k in sorted({a.kind for a in arrivals})},
        "serve_starts": s.starts, "restarts": s.starts - 1, "kills": kills,
        "other_exits": [c for c in s.exits if c != -signal.SIGKILL],
        "orphans_stopped": s.orphans_stopped, "serve_stop_code": stop_code,
        "outages": s.outages, "deleted_model": s.deletion, "poisons": s.poisons,
        "nudges": s.nudges, **report,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }


def settle(s: Soak, arrivals: list[Arrival], timeout_s: float = 600.0) -> None:
    """Wait until every arrival is accounted for. Batches left `accepted` by a kill after
    the last arrival are processed by the next update: if none comes, the driver starts
    the `update-elec2` deployment (as the schedule or an operator in the UI would)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if s.wait(lambda: all(account(s.home, a) in TERMINAL for a in arrivals), 60):
            return
        if pending_batches(s.home):
            run_update_deployment(s)
            s.nudges += 1


def run_update_deployment(s: Soak) -> None:
    from tests.services import api, login

    base = f"http://127.0.0.1:{s.port}/api"
    try:
        login(base, s.home)
        deps = [d for d in api(base, "/deployments/filter", {}) if d["name"] == f"update-{DATASET}"]
        if deps:
            api(base, f"/deployments/{deps[0]['id']}/create_flow_run", {})
    except OSError:
        pass  # serve is restarting: tried again at the next round


def invariants(s: Soak, arrivals: list[Arrival]) -> dict[str, Any]:
    for a in arrivals:
        a.outcome = account(s.home, a)
    outcomes = Counter(a.outcome for a in arrivals)
    processed_twice = query(s.home, "SELECT batch_hash, COUNT(*) FROM versions WHERE model=? "
                                    "GROUP BY batch_hash HAVING COUNT(*) > 1", (MODEL,))
    landing_neither = landing_unaccounted(s.home)
    expected = {"good": ("processed",), "duplicate": ("duplicate",),
                "broken": ("quarantined",), "poison": ("failed",)}
    wrong = [asdict(a) for a in arrivals if a.outcome not in expected[a.kind]]
    reasons = quarantine_sources(s.home)
    dead = {h for (h,) in query(s.home, "SELECT hash FROM dead_letters WHERE model=?", (MODEL,))}
    return {
        "accounted": dict(outcomes),
        "lost": sum(a.outcome not in TERMINAL for a in arrivals),
        "unexpected_outcomes": wrong[:20],
        "quarantined_without_reason": [a.name for a in arrivals if a.outcome == "quarantined"
                                       and not (reasons.get(a.name) or "").strip()],
        "poison_dead_lettered": sum(a.digest in dead for a in arrivals if a.kind == "poison"),
        "batches_with_two_versions": len(processed_twice),
        "landing_files_with_neither": landing_neither,
        "status_line": status_line(s),
        **registry_agreement(s, arrivals),
    }


def landing_unaccounted(home: Path) -> int:
    from greenloop.data import content_hash
    from greenloop.watch import is_candidate

    known = {h for (h,) in query(home, "SELECT hash FROM batches WHERE model=? UNION SELECT "
                                       "hash FROM quarantine WHERE dataset=? AND hash IS NOT "
                                       "NULL", (MODEL, DATASET))}
    folder = home / "data" / "landing" / DATASET
    return sum(content_hash(p) not in known for p in folder.iterdir()
               if p.is_file() and is_candidate(p))


def status_line(s: Soak) -> str:
    """`greenloop status`'s own count of arrivals and landing files with neither row."""
    cmd = [sys.executable, "-m", "greenloop_cli", "status", "--config", CONFIG, "--home",
           str(s.home)]
    out = subprocess.run(cmd, cwd=s.home, env={**s.env(), "COLUMNS": "400"},  # one line
                         capture_output=True, text=True, check=False).stdout
    return next((line.strip() for line in out.splitlines() if line.startswith("arrivals:")),
                out[-300:])


def registry_agreement(s: Soak, arrivals: list[Arrival]) -> dict[str, Any]:
    """Every ledger version in MLflow with the same run id; the champion alias equal on
    both sides; the champion loads with MLflow's pyfunc loader and predicts finite values."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=s.mlflow.url, registry_uri=s.mlflow.url)
    mlflow_runs = {int(v.version): v.run_id
                   for v in client.search_model_versions(f"name='{MODEL}'")}
    ledger = query(s.home, "SELECT version, run_id FROM versions WHERE model=?", (MODEL,))
    mismatched = [v for v, run in ledger if mlflow_runs.get(int(v)) != run]
    champion_ledger = (query(s.home, "SELECT version FROM aliases WHERE model=? ORDER BY id "
                                     "DESC LIMIT 1", (MODEL,)) or [(None,)])[0][0]
    alias = int(client.get_model_version_by_alias(MODEL, "champion").version)
    finite, predictions = champion_predicts(mlflow, s, arrivals)
    return {"ledger_versions": len(ledger), "mlflow_versions": len(mlflow_runs),
            "ledger_versions_not_in_mlflow_with_same_run": mismatched,
            "orphan_mlflow_versions": len(set(mlflow_runs) - {int(v) for v, _ in ledger}),
            "champion_ledger": champion_ledger, "champion_mlflow_alias": alias,
            "champion_outputs_finite": finite, "champion_predictions": predictions}


def champion_predicts(mlflow: Any, s: Soak, arrivals: list[Arrival]) -> tuple[bool, int]:
    """models:/<m>@champion through pyfunc, on the last good batch: its predictions, and
    whether the network's raw outputs are finite (argmax would hide NaN scores)."""
    import numpy as np
    import torch

    from tasks.mlmodel import score

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    mlflow.set_tracking_uri(s.mlflow.url)
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    last = next(a for a in reversed(arrivals) if a.kind == "good")
    frame = pd.read_csv(s.landing / last.name)
    predictions = score(loaded, frame)  # pyfunc's predict, integer columns made float first
    model = loaded.unwrap_python_model().model
    with torch.no_grad():
        raw = model.net(model.pre.features(frame)).numpy()
    finite = bool(np.isfinite(raw).all()) and not pd.Series(predictions).isna().any()
    return finite, len(predictions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="a new folder (thrown away)")
    ap.add_argument("--arrivals", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", default="random:0.004",
                    help="GREENLOOP_FAULTS for serve (default: SIGKILL at any point, p=0.004)")
    ap.add_argument("--report", type=Path, help="also write the JSON report here")
    args = ap.parse_args()
    if args.arrivals < 10:
        ap.error("--arrivals: at least 10 (room for every kind of fault)")
    if args.home.exists() and any(args.home.iterdir()):
        ap.error(f"--home {args.home}: not empty (the soak needs a throwaway home)")
    report = json.dumps(run_soak(args.home, args.arrivals, args.seed, args.faults), indent=1)
    if args.report:
        args.report.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
