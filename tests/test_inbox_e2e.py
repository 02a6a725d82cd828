"""The approval inbox end to end in real headless Chromium (Debian's ``chromium``, driven by Playwright).

A live uvicorn serves the API and the inbox, a worker runs the workflow on the session's servers.
The browser sees the run appear, opens it, reads the output under review, approves with a comment
and sees the run finish. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from convergio.settings import Settings
from convergio.workers.worker import WorkerResources
from tests.graphflow_helpers import STRATEGIC_INPUTS
from tests.live_api import ADMIN_KEY, APPROVER_KEY, APPROVER_NAME, bearer, live_api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def artifacts(repo_root: Path) -> Path:
    path = repo_root / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def _require_chromium() -> None:
    # Not a skip: a missing browser means this machine was not set up by scripts/test.sh.
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail(
            f"{CHROMIUM} not found: the inbox test drives Debian's Chromium. "
            "Run `bash scripts/test.sh` (it installs it as root) or `apt-get install -y chromium chromium-driver`."
        )


async def test_inbox_approves_a_run_in_real_chromium(
    dev_client: Client, settings: Settings, resources: WorkerResources, artifacts: Path
) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright, expect

    comment = "Numbers hold up; go ahead with Munich."
    async with (
        live_api(dev_client, settings, resources) as base,
        httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_KEY)) as http,
    ):
        started = await http.post(
            "/workflows", json={"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
        )
        assert started.status_code == 202, started.text
        workflow_id = started.json()["workflow_id"]

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                script_errors: list[str] = []
                page.on("pageerror", lambda e: script_errors.append(str(e)))
                await page.goto(f"{base}/inbox")  # redirects to /inbox/
                # Without a key the API refuses, and the page says what to do.
                await expect(page.locator("#queue-status")).to_contain_text("enter an API key", timeout=20_000)

                # A person pastes their own key; the API records its holder as the approver.
                await page.get_by_label("API key").fill(APPROVER_KEY)
                await page.get_by_role("button", name="Save").click()
                await expect(page.locator("#identity-status")).to_have_text("saved")

                # The run appears in the list once its gate is open, and opens on a click.
                item = page.locator(f'.run-item[data-workflow-id="{workflow_id}"]')
                await expect(item).to_contain_text("1 to approve", timeout=60_000)
                await item.click()
                gate = page.locator('.gate[data-gate-id="executive_approval"]')
                await expect(gate.locator(".gate-output")).to_contain_text(
                    "Strategic synthesis", timeout=20_000
                )
                await expect(gate.locator(".gate-cost")).to_contain_text("$")
                await expect(gate.locator(".gate-deadline")).not_to_be_empty()
                await expect(page.locator("#run-ui")).to_have_attribute(
                    "href", settings.workflow_ui_url(workflow_id)
                )
                await expect(page.locator("#steps tr")).to_have_count(7)
                # The live stream replays what happened so far.
                await expect(page.locator("#events .event.turn_finished").first).to_be_visible(timeout=20_000)
                await expect(gate.get_by_role("combobox", name="Role")).to_have_value("executive")

                # Sent back once: the reviewed step is redone and the gate opens again, one request fewer.
                await expect(gate.locator("button.changes")).to_have_attribute(
                    "title", "2 change request(s) left"
                )
                await gate.get_by_label("Comment").fill("Add a cost table.")
                await gate.get_by_role("button", name="Request changes").click()
                await expect(gate.locator("button.changes")).to_have_attribute(
                    "title", "1 change request(s) left", timeout=60_000
                )
                await expect(gate.get_by_label("Comment")).to_have_value("")
                await page.screenshot(path=str(artifacts / "inbox-gate.png"), full_page=True)

                await gate.get_by_label("Comment").fill(comment)
                await gate.get_by_role("button", name="Approve").click()
                await expect(gate.locator(".decide-status")).to_have_text("Approved.", timeout=20_000)

                await expect(page.locator("#run-status")).to_have_text("completed", timeout=60_000)
                await expect(page.locator("#report")).to_be_visible()
                await expect(page.locator("#audit li")).to_have_text([
                    re.compile("^changes requested by .*Add a cost table"),
                    re.compile(f"^approved by .*{re.escape(comment)}"),
                ])
                await expect(page.locator("#stream-status")).to_have_text("run ended", timeout=20_000)
                await expect(page.locator(".gate")).to_have_count(0)
                await page.screenshot(path=str(artifacts / "inbox.png"), full_page=True)
                assert script_errors == []
            finally:
                await browser.close()

        # The decision the browser sent is the one the workflow recorded.
        view = (await http.get(f"/workflows/{workflow_id}")).json()
        assert view["status"] == "completed"
        decisions = [
            (e["actor"], e["outcome"], e["comment"])
            for e in view["result"]["audit"]
            if e["kind"] == "decision"
        ]
        assert decisions == [
            (APPROVER_NAME, "changes requested", "Add a cost table."),
            (APPROVER_NAME, "approved", comment),
        ], json.dumps(view["result"]["audit"])

    for name in ("inbox-gate.png", "inbox.png"):
        shot = artifacts / name
        assert shot.is_file() and shot.stat().st_size > 10_000
        assert shot.read_bytes()[:8] == PNG_MAGIC
