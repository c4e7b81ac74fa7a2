"""The UIs in a real browser: `greenloop serve` + `greenloop ui`, batches dropped into
data/landing/, then Debian's headless Chromium (driven by Playwright) reads the Prefect
and MLflow pages and saves screenshots to reports/screenshots/.

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


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append("Debian chromium (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("python playwright (pip install -e '.[scale]')")
    require(missing, "browser check", "GREENLOOP_REQUIRE_BROWSER", "make test-browser")


def _update_runs_final(base: str) -> list[dict]:
    runs = flow_runs(base, ["update-elec2", "ingest-elec2"])
    states = [r["state_type"] for r in runs]
    if runs and all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states):
        return runs
    return []


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
        wait_until(lambda: http_ok(f"{base}/health") and len(
            [d for d in api(base, "/deployments/filter", {}) if d["name"] in DEPLOYMENTS]) == 4,
                   120, "4 deployments on the Prefect server", procs=procs)
        timings["serve_ready_s"] = time.monotonic() - t0
        wait_until(lambda: http_ok(f"{mlflow_ui}/health"), 120, "MLflow UI", procs=procs)
        timings["ui_ready_s"] = time.monotonic() - t0

        # Four batches bootstrap the first model (arriving together: updates queue up on
        # the model's concurrency limit and process them in arrival order) ...
        for b in batches[:4]:
            drop(b, landing)
        wait_until(lambda: ledger_rows(home, "SELECT 1 FROM versions WHERE model=?", (MODEL,)),
                   240, "the bootstrap model (4 batches)", procs=procs)
        wait_until(lambda: _update_runs_final(base), 120, "all runs final", procs=procs)
        # ... then one more batch: the timed path a user sees.
        t_drop = time.monotonic()
        drop(batches[4], landing)
        wait_until(lambda: ledger_rows(
            home, "SELECT 1 FROM batches WHERE model=? AND seq=5 AND status='processed'",
            (MODEL,)), 120, "batch 5 processed", procs=procs)
        timings["batch_to_processed_s"] = time.monotonic() - t_drop
        runs = wait_until(lambda: _update_runs_final(base), 120, "all runs final", procs=procs)
        timings["batch_to_update_completed_s"] = time.monotonic() - t_drop

        assert all(r["state_type"] == "COMPLETED" for r in runs), \
            [(r["name"], r["deployment_name"], r["state_type"]) for r in runs]
        ingests = [r for r in runs if r["deployment_name"] == "ingest-elec2"]
        assert len(ingests) == 5  # one per file, each file once
        processed = ledger_rows(home, "SELECT seq, decision, version FROM batches WHERE model=? "
                                      "ORDER BY seq", (MODEL,))
        assert [(s, d) for s, d, _ in processed] == [
            (1, "skip"), (2, "skip"), (3, "skip"), (4, "retrain"), (5, "finetune")]
        new_version = processed[-1][2]
        assert new_version == 2
        last_update = next(r for r in runs if r["deployment_name"] == "update-elec2"
                           and r["start_time"] and r["start_time"] >= max(
                               i["start_time"] for i in ingests))
        deployments = {d["name"]: d["id"] for d in api(base, "/deployments/filter", {})}
        limits = {c["name"]: c["limit"] for c in api(base, "/v2/concurrency_limits/filter", {})}
        assert limits[f"greenloop-update-{MODEL}"] == 1  # one update of the model at a time

        SHOTS.mkdir(parents=True, exist_ok=True)
        t_browser = time.monotonic()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 900})

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

            text = visit(f"{prefect_ui}/runs/flow-run/{last_update['id']}", "Completed",
                         "prefect-update-run.png")
            assert "update-elec2" in text
            page.get_by_text(re.compile(r"batch 5: finetune -> version 2")).first.wait_for(
                timeout=30_000)
            page.screenshot(path=str(SHOTS / "prefect-update-run.png"))

            exp = json.loads(page.request.get(
                f"{mlflow_ui}/ajax-api/2.0/mlflow/experiments/get-by-name"
                "?experiment_name=greenloop-elec2").text())["experiment"]["experiment_id"]
            visit(f"{mlflow_ui}/#/experiments/{exp}/runs", f"{MODEL}-b00005",
                  "mlflow-runs.png")
            close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
            if close.count():
                close.first.click()
            page.get_by_role("button", name="Columns", exact=True).click()
            menu = page.get_by_role("dialog")
            for col in ["energy_kwh", "cpu_seconds.train", "wall_seconds.train",
                        "emissions_kg", "drift_share"]:
                menu.locator(".du-bois-light-tree-title").filter(
                    has_text=re.compile(f"^{re.escape(col)}$")).first.click()
            page.keyboard.press("Escape")
            page.get_by_role("columnheader", name="energy_kwh").first.wait_for(timeout=30_000)
            time.sleep(1.0)
            page.screenshot(path=str(SHOTS / "mlflow-runs.png"))
            text = page.inner_text("body")
            for col in ["energy_kwh", "cpu_seconds.train", "emissions_kg"]:
                assert col in text
            for seq in range(1, 6):
                assert f"{MODEL}-b{seq:05d}" in text

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
        timings["total_s"] = time.monotonic() - t0
        (SHOTS / "timings.json").write_text(json.dumps(
            {k: round(v, 1) for k, v in timings.items()}, indent=2) + "\n")
        print("timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    finally:
        for proc in procs:
            proc.stop()
