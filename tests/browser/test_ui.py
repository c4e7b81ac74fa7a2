"""The UIs in a real browser: `greenloop serve` + `greenloop ui`, batches dropped into
data/landing/, then Debian's headless Chromium (driven by Playwright) reads the Prefect
and MLflow pages and saves screenshots to reports/screenshots/.

Served arrivals run warm: each file is one Prefect task run `arrival-<file stem>` in the
serve process (no deployment flow run), and MLflow's batch runs nest under one parent
run per served session, which carries the session's totals (service.*, idle.*): serve
is stopped after the Prefect pages, so the MLflow pages show the closed session.

Installs nothing: needs `chromium` (apt) and the `playwright` Python package (the
`scale` extra); `make test-browser` provides both. Never `playwright install`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.services import (
    REPO,
    Proc,
    api,
    drop,
    flow_runs,
    free_port,
    greenloop,
    http_ok,
    ledger_rows,
    login,
    project_home,
    require,
    service_env,
    stream_files,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("GREENLOOP_SCREENSHOTS", REPO / "reports" / "screenshots"))
DEPLOYMENTS = ["ingest-elec2", "update-elec2", "scheduled-update-elec2", "full-retrain-elec2"]
MODEL = "elec2-finetune"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
BATCH_COLUMNS = ["energy_kwh", "cpu_seconds.train", "wall_seconds.train", "emissions_kg",
                 "drift_share"]
SESSION_COLUMNS = ["service.cpu_seconds", "service.energy_kwh", "service.arrivals",
                   "idle.cpu_seconds", "idle.energy_kwh"]
# MLflow 3.17's runs table: the +/- button in a parent run's name cell shows its children.
EXPAND = "[data-component-id$='runnamecellrenderer.tsx_46']"


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append("Debian chromium (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("python playwright (pip install -e '.[scale]')")
    require(missing, "browser check", "GREENLOOP_REQUIRE_BROWSER", "make test-browser")


def _arrivals_final(base: str, n: int) -> list[dict[str, Any]]:
    """The `arrival-*` task runs, once there are at least `n` and all are final."""
    runs = [r for r in api(base, "/task_runs/filter", {"limit": 200})
            if r["name"].startswith("arrival-")]
    if len(runs) >= n and all(r["state_type"] in FINAL for r in runs):
        return runs
    return []


def _task_run_logs(base: str, task_run_id: str) -> list[str]:
    return [g["message"] for g in api(base, "/logs/filter", {
        "logs": {"task_run_id": {"any_": [task_run_id]}}, "limit": 200})]


def _session_parents(mlflow_ui: str, exp_id: str) -> list[dict[str, Any]]:
    """The served-session parent runs, once finished with their totals logged (serve
    closes the session when it stops; while it runs, the meter flushes every 120 s)."""
    runs = api(f"{mlflow_ui}/ajax-api/2.0/mlflow", "/runs/search",
               {"experiment_ids": [exp_id], "max_results": 100}).get("runs", [])
    parents = []
    for r in runs:
        metrics = {m["key"]: m["value"] for m in r["data"].get("metrics", [])}
        if ("served session" in r["info"].get("run_name", "") and "service.cpu_seconds"
                in metrics and r["info"].get("status") == "FINISHED"):
            parents.append({"id": r["info"]["run_id"], "name": r["info"]["run_name"],
                            "metrics": metrics})
    return parents


def _toggle_columns(page: Any, names: list[str]) -> None:
    """Tick (or untick) columns in the runs table's Columns menu."""
    page.get_by_role("button", name="Columns", exact=True).click()
    menu = page.get_by_role("dialog")
    for col in names:
        menu.locator(".du-bois-light-tree-title").filter(
            has_text=re.compile(f"^{re.escape(col)}$")).first.click()
    page.keyboard.press("Escape")


def _widen(page: Any, header: str, px: int) -> None:
    """Drag a column header's right edge: long run and metric names stay readable."""
    box = page.get_by_role("columnheader", name=header, exact=True).first.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] - 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] + px, y, steps=5)
    page.mouse.up()


def _cell_text(page: Any, run_id: str, column: str) -> str:
    """The text of one run's cell under `column` (ag-grid splits a row into pinned and
    scrolled parts, joined by the run id)."""
    col_id = page.get_by_role("columnheader", name=column, exact=True).first.get_attribute(
        "col-id")
    return page.locator(f"[role='row'][row-id='{run_id}'] "
                        f"[role='gridcell'][col-id='{col_id}']").first.inner_text().strip()


def prefect_ui_login(page: Any, prefect_ui: str, home: Path) -> None:
    """Prefect's UI asks for the server's auth string (it keeps it in localStorage);
    the string is the contents of the home's state/prefect/auth."""
    page.goto(f"{prefect_ui}/dashboard", wait_until="load")
    field = page.locator("input[type='password']")
    field.wait_for(timeout=60_000)  # auth is on: the UI must ask
    field.fill((home / "state" / "prefect" / "auth").read_text().strip())
    page.get_by_role("button", name="Login").click()
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)


def mlflow_runs_shots(page: Any, mlflow_ui: str, exp_id: str,
                      parents: list[dict[str, Any]]) -> None:
    """The runs table twice: the session expanded with the batch runs' energy columns
    (mlflow-runs.png), then the session rows alone with their totals
    (mlflow-parent-runs.png)."""
    page.goto(f"{mlflow_ui}/#/experiments/{exp_id}/runs", wait_until="load")
    page.get_by_text("served session").first.wait_for(timeout=60_000)
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()
    _toggle_columns(page, ["Dataset", "Source", "Models", *BATCH_COLUMNS])  # room for metrics
    page.get_by_role("columnheader", name="energy_kwh").first.wait_for(timeout=30_000)
    _widen(page, "Run Name", 150)
    for parent in parents:
        page.locator(f"[role='row'][row-id='{parent['id']}'] {EXPAND}").first.click()
    page.get_by_text(f"{MODEL}-b00005").first.wait_for(timeout=30_000)
    time.sleep(1.0)
    page.screenshot(path=str(SHOTS / "mlflow-runs.png"))
    text = page.inner_text("body")
    for col in ["energy_kwh", "cpu_seconds.train", "emissions_kg"]:
        assert col in text
    for seq in range(1, 6):
        assert f"{MODEL}-b{seq:05d}" in text

    _toggle_columns(page, [*BATCH_COLUMNS, *SESSION_COLUMNS])
    for parent in parents:  # collapse: the table lists the sessions only
        page.locator(f"[role='row'][row-id='{parent['id']}'] {EXPAND}").first.click()
    page.get_by_text(f"{MODEL}-b00005").first.wait_for(state="hidden", timeout=30_000)
    for col in SESSION_COLUMNS:
        _widen(page, col, 40)
    time.sleep(1.0)
    page.screenshot(path=str(SHOTS / "mlflow-parent-runs.png"))
    text = page.inner_text("body")
    for parent in parents:
        assert parent["name"] in text
        shown = {col: float(_cell_text(page, parent["id"], col)) for col in SESSION_COLUMNS}
        assert shown == pytest.approx({c: parent["metrics"][c] for c in SESSION_COLUMNS},
                                      rel=1e-6)  # the session's final totals, as logged
        assert shown["service.arrivals"] == 5, shown
        assert shown["service.cpu_seconds"] > 0 and shown["service.energy_kwh"] > 0, shown
        assert shown["idle.cpu_seconds"] >= 0 and shown["idle.energy_kwh"] >= 0, shown


def test_prefect_and_mlflow_uis_show_the_served_pipeline(tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    home = project_home(tmp_path)
    config = home / "configs" / "elec2.yaml"
    batches = stream_files(home, config)
    landing = home / "data" / "landing" / "elec2"
    prefect_port, mlflow_port = free_port(), free_port()
    base, prefect_ui = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{prefect_port}"
    mlflow_ui = f"http://127.0.0.1:{mlflow_port}"
    env = service_env(home)
    timings: dict[str, float] = {}

    t0 = time.monotonic()
    serve = Proc(greenloop("serve", "--config", str(config), "--home", str(home), "--policy",
                           "finetune", "--port", str(prefect_port), "--poll-seconds", "0.5"),
                 tmp_path / "serve.log", env)
    ui = Proc(greenloop("ui", "--config", str(config), "--home", str(home), "--port",
                        str(mlflow_port)), tmp_path / "ui.log", env)
    procs = (serve, ui)
    try:
        wait_until(lambda: http_ok(f"{base}/health"), 120, "the Prefect server", procs=procs)
        login(base, home)  # serve's server wants its auth string (and CSRF tokens)
        wait_until(lambda: len(
            [d for d in api(base, "/deployments/filter", {}) if d["name"] in DEPLOYMENTS]) == 4,
                   120, "4 deployments on the Prefect server", procs=procs)
        timings["serve_ready_s"] = time.monotonic() - t0
        wait_until(lambda: http_ok(f"{mlflow_ui}/health"), 120, "MLflow UI", procs=procs)
        timings["ui_ready_s"] = time.monotonic() - t0

        # Four batches bootstrap the first model (arriving together: serve
        # takes one arrival at a time, in arrival order) ...
        for b in batches[:4]:
            drop(b, landing)
        wait_until(lambda: ledger_rows(home, "SELECT 1 FROM versions WHERE model=?", (MODEL,)),
                   240, "the bootstrap model (4 batches)", procs=procs)
        wait_until(lambda: _arrivals_final(base, 4), 120, "4 arrival task runs final",
                   procs=procs)
        # ... then one more batch: the timed path a user sees.
        t_drop = time.monotonic()
        drop(batches[4], landing)
        wait_until(lambda: ledger_rows(
            home, "SELECT 1 FROM batches WHERE model=? AND seq=5 AND status='processed'",
            (MODEL,)), 120, "batch 5 processed", procs=procs)
        timings["batch_to_processed_s"] = time.monotonic() - t_drop
        arrivals = wait_until(lambda: _arrivals_final(base, 5), 120, "5 arrival task runs final",
                              procs=procs)
        timings["batch_to_arrival_completed_s"] = time.monotonic() - t_drop

        assert all(r["state_type"] == "COMPLETED" for r in arrivals), \
            [(r["name"], r["state_type"]) for r in arrivals]
        # One task run per file, each file once, none inside a flow run.
        assert sorted(r["name"] for r in arrivals) == [f"arrival-batch-{i:05d}"
                                                       for i in range(1, 6)]
        assert all(r["flow_run_id"] is None for r in arrivals)
        assert flow_runs(base, ["ingest-elec2", "update-elec2"]) == []
        processed = ledger_rows(home, "SELECT seq, decision, version FROM batches WHERE model=? "
                                      "ORDER BY seq", (MODEL,))
        assert [(s, d) for s, d, _ in processed] == [
            (1, "skip"), (2, "skip"), (3, "skip"), (4, "retrain"), (5, "finetune")]
        new_version = processed[-1][2]
        assert new_version == 2
        fifth = next(r for r in arrivals if r["name"] == "arrival-batch-00005")
        wait_until(lambda: any("batch 5: finetune -> version 2" in m
                               for m in _task_run_logs(base, fifth["id"])),
                   30, "batch 5's log line on the server", procs=procs)
        deployments = {d["name"]: d["id"] for d in api(base, "/deployments/filter", {})}
        limits = {c["name"]: c["limit"] for c in api(base, "/v2/concurrency_limits/filter", {})}
        assert limits[f"greenloop-update-{MODEL}"] == 1  # one update of the model at a time

        SHOTS.mkdir(parents=True, exist_ok=True)
        t_browser = time.monotonic()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            prefect_ui_login(page, prefect_ui, home)

            def visit(url: str, expect: str, shot: str) -> str:
                page.goto(url, wait_until="load")
                page.get_by_text(expect).first.wait_for(timeout=60_000)
                time.sleep(1.0)  # let charts and counters settle for the screenshot
                page.screenshot(path=str(SHOTS / shot), full_page=False)
                return page.inner_text("body")

            text = visit(f"{prefect_ui}/deployments", "scheduled-update-elec2",
                         "prefect-deployments.png")
            for name in DEPLOYMENTS:
                assert name in text
            assert "Every hour" in text  # schedule.update_cron "0 * * * *"

            text = visit(f"{prefect_ui}/deployments/deployment/{deployments['update-elec2']}",
                         "elec2: batch accepted", "prefect-update-deployment.png")
            assert "Triggers" in text and "elec2: batch accepted" in text

            text = visit(f"{prefect_ui}/deployments/deployment/"
                         f"{deployments['full-retrain-elec2']}", "Schedules",
                         "prefect-full-retrain-deployment.png")
            assert "At 03:00 AM, only on Sunday" in text  # present, inactive by default

            text = visit(f"{prefect_ui}/runs/task-run/{fifth['id']}", "arrival-batch-00005",
                         "prefect-arrival-run.png")
            page.get_by_text(re.compile(r"batch 5: finetune -> version 2")).first.wait_for(
                timeout=30_000)
            time.sleep(0.5)
            page.screenshot(path=str(SHOTS / "prefect-arrival-run.png"))
            text = page.inner_text("body")
            assert "Completed" in text and "batch 5: finetune -> version 2" in text

            # Stopping serve closes the served session: its final totals go to the parent
            # run at once (instead of the meter's next 120 s flush); the MLflow UI stays up.
            t_stop = time.monotonic()
            serve.stop()
            exp_id = api(f"{mlflow_ui}/ajax-api/2.0/mlflow",
                         "/experiments/get-by-name?experiment_name=greenloop-elec2")[
                             "experiment"]["experiment_id"]
            parents = wait_until(lambda: _session_parents(mlflow_ui, exp_id), 60,
                                 "the served session's totals in MLflow", procs=(ui,))
            timings["serve_stop_to_session_totals_s"] = time.monotonic() - t_stop
            assert len(parents) == 1  # one session, one model
            mlflow_runs_shots(page, mlflow_ui, exp_id, parents)

            text = visit(f"{mlflow_ui}/#/models/{MODEL}/versions/{new_version}",
                         "parent_version", "mlflow-model-version.png")
            for tag in ["decision", "finetune", "parent_version", "energy_kwh", "cpu_seconds",
                        "lineage_energy_kwh", "data_md5", "reason"]:
                assert tag in text
            assert f"{MODEL}-b00005" in text  # the source run
            # The tags table scrolls inside the page: a second shot shows its lower rows.
            page.get_by_text("parent_version", exact=True).first.scroll_into_view_if_needed()
            time.sleep(0.5)
            page.screenshot(path=str(SHOTS / "mlflow-model-version-tags.png"))
            browser.close()
        timings["browser_s"] = time.monotonic() - t_browser
        # The auth string reaches the UI only as typed in: serve never prints or logs it.
        auth = (home / "state" / "prefect" / "auth").read_text().strip()
        served_log = serve.log.read_text(errors="replace")
        assert "Prefect UI password: the contents of" in served_log
        assert auth not in served_log
        assert auth not in (home / "state" / "logs" / "prefect-server.log").read_text(
            errors="replace")
        timings["total_s"] = time.monotonic() - t0
        (SHOTS / "timings.json").write_text(json.dumps(
            {k: round(v, 1) for k, v in timings.items()}, indent=2) + "\n")
        print("timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    finally:
        for proc in procs:
            proc.stop()
