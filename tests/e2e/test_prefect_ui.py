"""The Prefect UI in a real browser: a person signs in and finds a batch, its documents and
its artifacts.

Headless Chromium is Debian's `chromium` (scripts/install-system-deps), driven by Playwright
with its executable_path, so no browser is downloaded. DOCPIPE_UI_SCREENSHOTS=docs/images
also writes the README's pictures there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from tests import documents
from tests.helpers import post_batch, wait_for_batch

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
# The UI's own requests on a busy CI machine: generous, as each wait ends as soon as it can.
expect.set_options(timeout=30_000)


@pytest.fixture
def page() -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no {CHROMIUM}: scripts/install-system-deps installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 860})
        finally:
            browser.close()


def sign_in(page: Page, ui_url: str, auth_string: str) -> None:
    """Open the UI and answer its login form with the server's auth string."""
    page.goto(ui_url)
    page.get_by_placeholder("admin:pass").fill(auth_string)
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_role("link", name="Runs", exact=True)).to_be_visible()


def open_batch_run(page: Page, batch_id: str) -> None:
    """Runs -> search for the batch -> its flow run, as a person looks a batch up."""
    page.get_by_role("link", name="Runs", exact=True).click()
    page.get_by_placeholder("Search by flow run name").fill(batch_id)
    link = page.get_by_role("link", name=f"batch-{batch_id}", exact=True).first
    expect(link).to_be_visible()
    # Followed as an address, not clicked: a click while the list still rewrites its own
    # address (the search) once left the run's page with the list's `tab`, which the UI
    # refused ("Something went wrong": expected flow-runs|task-runs).
    href = link.get_attribute("href")
    assert href is not None
    page.goto(urljoin(page.url, href))
    expect(page.get_by_role("tab", name="Artifacts")).to_be_visible()


def test_a_batch_with_failures_in_the_prefect_ui(
    api: httpx.Client, tenant: tuple[str, str], stack: Any, page: Page, tmp_path: Path
) -> None:
    from docpipe.home import prefect_auth_string

    tenant_id, key = tenant
    files, _ = documents.ten_files_two_broken()
    batch_id = post_batch(api, tenant_id, key, files)
    batch = wait_for_batch(api, key, batch_id)
    assert (batch["successCount"], batch["failureCount"]) == (8, 2)
    ui_url = stack.settings.prefect_api_url.removesuffix("/api")

    sign_in(page, ui_url, prefect_auth_string(stack.settings))
    open_batch_run(page, batch_id)

    # The run: its name, how it ended, and that it ran a task per document and a summary.
    expect(page.get_by_text(f"batch-{batch_id}", exact=True).first).to_be_visible()
    expect(page.get_by_text("Completed with failures").first).to_be_visible()
    expect(page.get_by_text("11 Task runs").first).to_be_visible()

    # Its task runs, one per document by file name; the two broken ones Failed.
    page.get_by_role("tab", name="Task Runs").click()
    expect(page.get_by_text("(9 Completed, 2 Failed)")).to_be_visible()
    for name, _ in files:
        card = page.locator("[data-slot=card]").filter(
            has=page.get_by_role("link", name=name, exact=True)
        )
        expect(card).to_contain_text("Failed" if name.startswith("cut.") else "Completed")
    expect(page.get_by_role("link", name=f"summarize-{batch_id}", exact=True)).to_be_visible()

    # The batch's progress and summary artifacts.
    page.get_by_role("tab", name="Artifacts").click()
    progress = page.get_by_text(f"batch-{batch_id}", exact=True).last
    expect(progress).to_be_visible()
    expect(page.get_by_text("10 of 10 documents finished")).to_be_visible()
    expect(page.get_by_text(f"batch-{batch_id}-summary", exact=True)).to_be_visible()
    headline = f"Batch {batch_id} complete: 8 succeeded, 2 failed"
    expect(page.get_by_text(headline)).to_be_visible()
    shots = [screenshot(page, tmp_path / "prefect-ui-flow-run.png")]

    # The summary table: every document, the broken ones with why. Wide enough to show
    # the table's last column, the reason.
    page.set_viewport_size({"width": 1700, "height": 860})
    page.get_by_text(f"batch-{batch_id}-summary", exact=True).click()
    table = page.get_by_role("table")
    expect(table.get_by_role("row")).to_have_count(11)  # a header and a row per document
    for name, reason in [("cut.pdf", "PDF does not open"), ("cut.png", "image does not decode")]:
        row = table.get_by_role("row").filter(has_text=name)
        expect(row).to_contain_text("ValidationFailed")
        expect(row).to_contain_text(reason)
    expect(table.get_by_role("row").filter(has_text="scan-0.pdf")).to_contain_text("Ready")
    expect(page.get_by_text("8 of 10 succeeded")).to_be_visible()  # the run's, beside it
    shots.append(screenshot(page, tmp_path / "prefect-ui-summary.png"))

    if target := os.environ.get("DOCPIPE_UI_SCREENSHOTS"):
        for shot in shots:
            publish(shot, Path(target) / shot.name)


def screenshot(page: Page, path: Path) -> Path:
    page.screenshot(path=path)
    assert path.stat().st_size > 10_000  # a picture, not a blank page
    return path


def publish(shot: Path, target: Path) -> None:
    """A copy for the README, in few colours: the UI's flat colours survive, the size drops."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(shot) as image:
        image.convert("RGB").quantize(colors=256).save(target, optimize=True)
    if target.stat().st_size > shot.stat().st_size:
        shutil.copyfile(shot, target)
