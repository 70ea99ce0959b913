"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against uvicorn + a Celery worker on
Postgres and Redis with auth required.

A user opens the page, is asked for a key, sees the jobs, opens one while it trains and watches its progress
and curves move (and cancels it); opens another before it finishes and sees, once it has succeeded, the
teacher-vs-student charts, and downloads an artifact.

Chromium comes from the distribution (`apt-get install chromium`), never from Playwright's downloader. When
it or the `playwright` package is missing the tests skip, or fail under DISTILLERY_REQUIRE_SERVICES=1 (CI).
DISTILLERY_UPDATE_SCREENSHOTS=1 writes the job page's screenshot to docs/dashboard.png (the README shows it);
otherwise it goes to the test's temporary folder, so a test run leaves the checkout as it was.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import drop_database, service_unavailable
from tests.e2e.client import job_body, submit, upload_digits
from tests.e2e.conftest import Digits, Stack, running_stack
from tests.e2e.processes import REPO

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("DISTILLERY_TEST_CHROMIUM", "/usr/bin/chromium"))
# A database and Redis db of this module's own: other e2e modules (pg_stack: distillery_e2e, db 13) may run
# at the same time on a shared machine, and each drops its database when it starts.
DATABASE = "distillery_e2e_dashboard"
REDIS_DB = 12
SCREENSHOT = REPO / "docs" / "dashboard.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium (headless) from /usr/bin, launched by Playwright. Set up before the stack: a machine
    without a browser fails (or skips) at once."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        service_unavailable("Playwright", f"{exc} (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        service_unavailable("Chromium", f"{CHROMIUM} does not exist (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            # Chromium's sandbox cannot start as root (CI containers run as root).
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox"] if os.geteuid() == 0 else []
            )
        except Error as exc:
            service_unavailable("Chromium", str(exc).splitlines()[0])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """pg_stack's production shape (auth required) on this module's own database and Redis db."""
    with running_stack(DATABASE, REDIS_DB, tmp_path_factory.mktemp("dashboard_stack"), tenant="dashboard") as running:
        yield running
    drop_database(DATABASE)


def test_the_page_needs_no_key_but_its_data_does(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous:
        root = anonymous.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/ui"
        page = anonymous.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for src in re.findall(r'(?:src|href)="([^"#]+)"', page.text):  # every file the page loads is served
            if not src.startswith(("docs", "http")):
                assert anonymous.get(f"/{src}").status_code == 200, src
        assert anonymous.get("/ui/static/app.js").headers["content-type"].startswith("text/javascript")
        for name in ("index.html", "nope.js", "..%2Fendpoints.py"):  # only the listed files are served
            missing = anonymous.get(f"/ui/static/{name}")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found", name
        assert anonymous.get("/v1/jobs").status_code == 401  # the data still needs the key
        assert "/ui" not in anonymous.get("/openapi.json").json()["paths"]


def _snapshot(page: Any) -> dict[str, Any]:
    """What the job page shows now, read in one go so the values belong together."""
    return dict(
        page.evaluate(
            """() => ({
                status: document.querySelector('#job-status .badge')?.dataset.status ?? null,
                fraction: Number(document.querySelector('#job-progress .progress')?.dataset.fraction ?? -1),
                text: document.querySelector('#progress-text')?.textContent ?? '',
                points: Number(document.querySelector('#loss-chart svg')?.dataset.points ?? 0)
                      + Number(document.querySelector('#accuracy-chart svg')?.dataset.points ?? 0),
            })"""
        )
    )


def _watch_until(page: Any, done: Any, timeout: float) -> list[dict[str, Any]]:
    """Each change of what the page shows while the job runs, until `done(changes)` or the job ends."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = _snapshot(page)
        if snapshot["status"] != "running":
            raise AssertionError(f"the job is {snapshot['status']} before the page saw it progress: {seen}")
        if not seen or snapshot != seen[-1]:
            seen.append(snapshot)
            if done(seen):
                return seen
        time.sleep(0.2)
    raise AssertionError(f"the page did not change as expected within {timeout}s: {seen}")


def _bars(page: Any, chart: str) -> dict[str, float]:
    encoded = page.locator(f"#{chart} svg").get_attribute("data-bars") or ""
    return {label: float(value) for label, value in (item.split("=") for item in encoded.split(";") if item)}


def _new_page(browser: Any, key: str | None = None) -> tuple[Any, Any, list[str]]:
    """A fresh browser context (no stored key unless given) and its page; uncaught page errors collect in
    the list."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    if key is not None:
        context.add_init_script(f"localStorage.setItem('distillery.apiKey', {json.dumps(key)})")
    page = context.new_page()
    crashes: list[str] = []
    page.on("pageerror", lambda error: crashes.append(str(error)))
    return context, page, crashes


def test_a_user_signs_in_and_watches_a_job_train_live(browser: Any, stack: Stack, digits: Digits) -> None:
    """A long job (2,000 epochs): the page must show it moving however fast the machine is; then it is cancelled
    from the page, which frees the worker for the next test."""
    from playwright.sync_api import expect

    context, page, crashes = _new_page(browser)
    try:
        # Auth is on: the page asks for a key, refuses a wrong one, and lists the jobs with the right one.
        page.goto(f"{stack.url}/")
        expect(page.locator("#key-prompt")).to_be_visible()
        page.fill("#key-input", "dk_live_00000000" + "x" * 43)
        page.click("#key-form button")
        expect(page.locator("#key-error")).to_contain_text("refused")
        page.fill("#key-input", stack.key)
        page.click("#key-form button")
        expect(page.locator("#jobs-table")).to_be_visible()
        expect(page.locator("#key-prompt")).to_be_hidden()
        assert page.evaluate("localStorage.getItem('distillery.apiKey')") == stack.key

        with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as http:
            ids = upload_digits(http, digits)
            job_id = submit(http, job_body(*ids, epochs=2000, batch_size=64))["id"]

            # The list picks the new job up by itself (it polls), with its status and a progress bar.
            row = page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')
            expect(row).to_be_visible(timeout=15_000)
            expect(row.locator(".progress")).to_be_visible()
            row.locator("a").click()
            expect(page).to_have_url(re.compile(f"#/jobs/{job_id}$"))
            expect(page.locator("#job-spec")).to_contain_text('"epochs": 2000')

            # While it trains, the page shows it running, and its progress and curves move on their own.
            expect(page.locator("#job-status .badge")).to_have_text("running", timeout=120_000)
            seen = _watch_until(page, lambda s: len({x["points"] for x in s if x["points"]}) >= 3, timeout=240)
            fractions = [s["fraction"] for s in seen]
            assert len(set(fractions)) >= 3 and fractions == sorted(fractions), seen
            assert "epoch" in seen[-1]["text"] and "left" in seen[-1]["text"], seen
            assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#cancel-job")
            expect(page.locator("#job-status .badge")).to_have_text("cancelled", timeout=60_000)
            expect(page.locator('#events tr[data-type="cancel_requested"]')).to_have_count(1)
            expect(page.locator("#cancel-job")).to_have_count(0)
            assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert crashes == []
    finally:
        context.close()


def test_a_finished_job_shows_the_report_and_its_downloads(
    browser: Any, stack: Stack, digits: Digits, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    context, page, crashes = _new_page(browser, key=stack.key)
    try:
        with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as http:
            ids = upload_digits(http, digits)
            job_id = submit(http, {**job_body(*ids, epochs=6, batch_size=64), "baseline": True})["id"]
            page.goto(f"{stack.url}/ui#/jobs/{job_id}")  # opened before it finishes: it updates by itself
            expect(page.locator("#job-status .badge")).to_have_text(re.compile("queued|running"))
            expect(page.locator("#report")).to_be_hidden()
            expect(page.locator("#job-status .badge")).to_have_text("succeeded", timeout=240_000)
            job = http.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "succeeded", stack.logs()
            metrics = http.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 1000}).json()["data"]

            # Every curve point, the report's numbers as charts, the events, the downloads.
            expect(page.locator("#report")).to_be_visible()
            expect(page.locator("#progress-text")).to_contain_text("100%")
            assert _snapshot(page)["points"] == len([m for m in metrics if not m["name"].endswith("/lr")])
            final = job["metrics"]
            assert _bars(page, "report-accuracy") == {
                "teacher": final["teacher/top1"],
                "student alone": final["baseline/top1"],
                "distilled": final["student/top1"],
            }
            assert _bars(page, "report-latency")["distilled"] == final["student/latency_ms/median_ms"]
            assert _bars(page, "report-size")["teacher"] == final["teacher/params"]
            assert _bars(page, "report-agreement") == {
                "teacher (itself)": 1.0,
                "student alone": final["baseline/agreement"],
                "distilled": final["student/agreement"],
            }
            expect(page.locator('[data-stat="speed-up"] b')).to_have_text(f"{final['speedup']:.1f}×")
            expect(page.locator('#events tr[data-type="succeeded"]')).to_have_count(1)

            names = {a["name"] for a in http.get(f"/v1/jobs/{job_id}/artifacts").json()}
            assert {"report.json", "report.html", "student.onnx", "student.safetensors"} <= names
            expect(page.locator("#artifacts button.download")).to_have_count(len(names))
            shown = page.locator("#artifacts button.download").evaluate_all("bs => bs.map(b => b.dataset.name)")
            assert set(shown) == names
            with page.expect_download() as download_info:
                page.locator('#artifacts button[data-name="report.json"]').click()
            download = download_info.value
            assert download.suggested_filename == "report.json"
            assert (
                json.loads(Path(download.path()).read_text())
                == http.get(f"/v1/jobs/{job_id}/artifacts/report.json").json()
            )
            html = http.get(f"/v1/jobs/{job_id}/artifacts/report.html")
            assert html.headers["content-type"].startswith("text/html") and "data:image/png;base64," in html.text

        screenshot = SCREENSHOT if os.environ.get("DISTILLERY_UPDATE_SCREENSHOTS") == "1" else tmp_path / "job.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 50_000

        # Back to the list: the job is there as succeeded, with its top-1.
        page.click("text=← all jobs")
        row = page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')
        expect(row).to_have_attribute("data-status", "succeeded")
        expect(row).to_contain_text(f"top-1 {final['student/top1'] * 100:.1f}%")
        page.screenshot(path=str(tmp_path / "jobs.png"))
        assert crashes == []
    finally:
        context.close()
