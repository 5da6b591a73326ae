"""The operator dashboard in a real headless Chromium, against a real uvicorn on 127.0.0.1.

The API runs in this test's event loop on the test's `core` (real redis-server, temp data dir, a fast
fake embedder whose per-batch delay a test can raise); a worker runs in-process when a test starts one.
Chromium is the Debian package (`scripts/test.sh` installs it); without it these tests skip.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from common.db import KbRecord, TaskRecord
from common.runtime import Core, open_core
from lifecycle import documents as ingest
from tests.conftest import make_settings
from tests.fakes import HashEmbedder
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1366, "height": 768}
UI_TIMEOUT_MS = 20_000
SERVER_START_TIMEOUT_S = 20.0
SETTLED_JS = "() => document.getAnimations().every((a) => a.playState !== 'running')"

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a dev extra: pip install -e .[dev]")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} not found: scripts/test.sh installs the Debian package 'chromium' "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)
expect = playwright_api.expect


class SlowHashEmbedder(HashEmbedder):
    """The fake embedder with an adjustable sleep per model batch (it runs in a worker thread)."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.delay_s = 0.0

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        return super().encode(texts, batch_size)


@dataclass
class Site:
    """A running API: its base URL, app, core and the knobs tests turn."""

    url: str
    app: FastAPI
    core: Core
    vectors: Any
    embedder: SlowHashEmbedder
    kb: KbRecord | None = None

    async def key(self, tenant: str = "default", *, admin: bool = True) -> str:
        return (await asyncio.to_thread(self.app.state.services.apikeys.create, tenant, admin=admin)).secret

    async def submit(self, text: str, name: str = "notes.md") -> TaskRecord:
        if self.kb is None:
            self.kb = await ingest.create_kb(self.core, "docs", tenant="default")
        return (await submit_document(self.core, self.kb, name, text.encode()))[1]


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def site(tmp_path: Path, redis_url: str, vectors: Any) -> AsyncIterator[Site]:
    """uvicorn serving the app on a free 127.0.0.1 port, in this event loop; stopped at teardown."""
    settings = make_settings(tmp_path / "data", redis_url)
    settings.embedding.batch_size = 2
    settings.embedding.window_batches = 1  # a progress report every 2 chunks
    embedder = SlowHashEmbedder()
    async with AsyncExitStack() as stack:
        core = await stack.enter_async_context(open_core(settings, embedder=embedder))
        app = create_app(settings, core=core, vectors=vectors)
        sock = _free_socket()
        stack.callback(sock.close)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", proxy_headers=False))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(SERVER_START_TIMEOUT_S):
                while not server.started:
                    if serving.done():
                        serving.result()  # raises why uvicorn could not start
                        raise AssertionError("uvicorn exited before it started")
                    await asyncio.sleep(0.05)
            host, port = sock.getsockname()[:2]
            yield Site(url=f"http://{host}:{port}", app=app, core=core, vectors=vectors, embedder=embedder)
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=15)


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh headless Chromium page at 1366x768."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                           timeout=30_000)
        try:
            context = await browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(UI_TIMEOUT_MS)
            yield await context.new_page()
        finally:
            await browser.close()


async def sign_in(page: Any, site: Site, key: str) -> None:
    await page.goto(f"{site.url}/dashboard")
    await page.fill("#signin-key", key)
    await page.click("#signin-submit")


def task_row(page: Any, task_id: str) -> Any:
    return page.locator(f"[data-testid=task-row][data-task-id='{task_id}']")


def long_text(words: int) -> str:
    return "# Long\n\n" + " ".join(f"word{i % 997}" for i in range(words)) + "\n"


async def wait_db_status(site: Site, task_id: str, status: str, timeout_s: float = 20.0) -> TaskRecord:
    task = await wait_for_status(site.core, task_id, (status,), timeout_s=timeout_s)
    assert task.status == status
    return task


async def test_sign_in_rejects_bad_keys_and_non_admins(site: Site, page: Any) -> None:
    response = await page.goto(f"{site.url}/dashboard")
    assert response is not None and response.status == 401
    await expect(page.locator("#signin-form")).to_be_visible()

    await sign_in(page, site, "dvk_not-a-real-key")
    await expect(page.get_by_test_id("signin-error")).to_contain_text("invalid or was revoked")

    await sign_in(page, site, await site.key("tenant-a", admin=False))
    await expect(page.get_by_test_id("forbidden-title")).to_contain_text("403")
    await expect(page.locator("body")).to_contain_text("not an admin key")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["docvec_key"]["httpOnly"] and cookies["docvec_key"]["sameSite"] == "Strict"

    await page.click("#signout-submit")  # back to the form, cookie gone
    await expect(page.locator("#signin-form")).to_be_visible()
    assert "docvec_key" not in {c["name"] for c in await page.context.cookies()}


async def test_queued_task_warns_then_a_worker_appears_and_finishes_it(site: Site, page: Any, tmp_path: Path) -> None:
    task = await site.submit(long_text(300))
    await sign_in(page, site, await site.key())
    await expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "ok")

    # Queued, nobody to run it: the critical banner, the backlog in the stream, the queued row.
    warning = page.get_by_test_id("warning-no_live_worker")
    await expect(warning).to_be_visible()
    await expect(warning).to_contain_text("1 task queued but no worker is alive")
    await expect(page.locator("[data-testid=stream-normal] [data-field=lag]")).to_have_text("1")
    await expect(task_row(page, task.id).get_by_test_id("task-status")).to_have_text("queued")
    await expect(page.locator("#count-queued")).to_have_text("1")
    await page.screenshot(path=str(tmp_path / "dashboard-no-worker.png"), full_page=True)

    site.embedder.delay_s = 0.05  # slow enough for progress to be seen moving, fast enough to finish soon
    async with running_worker(site.core, site.vectors, consumer="dash-worker-1"):
        card = page.locator("[data-testid=worker][data-consumer=dash-worker-1]")
        await expect(card.get_by_test_id("worker-state")).to_have_text("alive")
        await expect(warning).to_be_hidden()
        row = task_row(page, task.id)
        await expect(row.get_by_test_id("task-status")).to_have_text("done", timeout=60_000)
        await expect(row.get_by_test_id("task-progress")).to_have_attribute("aria-valuenow", "100")
        await expect(row.get_by_test_id("task-change")).to_have_text("added")
        await expect(row.get_by_test_id("task-chunks")).to_have_text(re.compile(r"^[1-9]\d* new · 0 reused$"))
        await expect(card.get_by_test_id("worker-done")).to_have_text("1")
        await expect(page.locator("#count-done")).to_have_text("1")
        await expect(page.get_by_test_id("throughput-summary")).to_contain_text("1 done")
        await expect(row.get_by_test_id("cancel-btn")).to_be_disabled()
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
            "the dashboard scrolls horizontally at 1366x768"
        await page.wait_for_function(SETTLED_JS, timeout=5_000)  # progress bars finish their CSS transition
        screenshot = tmp_path / "dashboard.png"
        await page.screenshot(path=str(screenshot), full_page=True)
        print(f"dashboard screenshot: {screenshot}")
    assert (await wait_db_status(site, task.id, "done")).progress == 1.0


async def test_cancel_a_running_task_then_retry_it_from_the_table(site: Site, page: Any, tmp_path: Path) -> None:
    site.embedder.delay_s = 0.25  # ~100 model batches: tens of seconds unless cancelled
    task = await site.submit(long_text(6000), name="big.md")
    await sign_in(page, site, await site.key())
    async with running_worker(site.core, site.vectors, consumer="dash-worker-2"):
        row = task_row(page, task.id)
        await expect(row.get_by_test_id("task-status")).to_have_text("running")
        inflight = page.locator(f"[data-testid=worker][data-consumer=dash-worker-2] "
                                f"[data-testid=inflight][data-task-id='{task.id}']")
        await expect(inflight).to_be_visible()
        await expect(row).to_have_attribute("data-status", "running")
        await expect(row.get_by_test_id("task-progress")).not_to_have_attribute("aria-valuenow", "0")
        await page.screenshot(path=str(tmp_path / "dashboard-running.png"), full_page=True)

        await row.get_by_test_id("cancel-btn").click()

        cancelled = await wait_db_status(site, task.id, "cancelled")
        assert cancelled.progress < 1.0
        await expect(row.get_by_test_id("task-status")).to_have_text("cancelled")
        await expect(page.get_by_test_id("action-message")).to_contain_text("cancelled")
        await expect(inflight).to_be_hidden()  # the worker stopped working on it
        # Its chunk set is garbage: counted until the janitor confirms it gone (after the settle window).
        await expect(page.get_by_test_id("garbage-count")).to_have_text("1")

        site.embedder.delay_s = 0.0
        await row.get_by_test_id("retry-btn").click()
        await expect(row.get_by_test_id("task-status")).to_have_text("done", timeout=60_000)
    assert (await wait_db_status(site, task.id, "done")).attempts >= 1


async def test_every_dashboard_response_is_locked_down_and_bearer_keys_work(site: Site) -> None:
    """CSP (own files only, no inline code, no frames), X-Frame-Options and Referrer-Policy on the page,
    the sign-in and 403 pages, the sign-in redirect and the assets; `Authorization: Bearer` is accepted
    as on every other route."""
    admin, tenant_key = await site.key(), await site.key("tenant-a", admin=False)
    async with httpx.AsyncClient(base_url=site.url, timeout=10) as http:
        responses = {
            "page": await http.get("/dashboard", headers={"Authorization": f"Bearer {admin}"}),
            "forbidden": await http.get("/dashboard", headers={"Authorization": f"Bearer {tenant_key}"}),
            "sign-in": await http.get("/dashboard"),
            "login": await http.post("/dashboard/login", data={"key": admin}),
            "script": await http.get("/dashboard/static/dashboard.js"),
        }
        wrong = await http.get("/dashboard", headers={"Authorization": "Bearer dvk_wrong"})
    assert [responses[k].status_code for k in ("page", "forbidden", "sign-in", "login")] == [200, 403, 401, 303]
    assert wrong.status_code == 401
    assert "dashboard.js" in responses["page"].text
    for name, response in responses.items():
        csp = response.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, name
        assert response.headers.get("x-frame-options") == "DENY", name
        assert response.headers.get("referrer-policy") == "no-referrer", name


async def test_the_key_cookie_is_secure_behind_a_trusted_tls_proxy_only(site: Site) -> None:
    admin = await site.key()

    async def cookie(forwarded: str | None) -> str:
        headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
        async with httpx.AsyncClient(base_url=site.url, timeout=10) as http:
            response = await http.post("/dashboard/login", data={"key": admin}, headers=headers)
        assert response.status_code == 303
        return response.headers["set-cookie"].lower()

    assert "secure" not in await cookie("https"), "an untrusted peer's X-Forwarded-Proto is not believed"
    site.core.settings.api.trusted_proxies = ["127.0.0.0/8"]
    assert "; secure" in await cookie("https")
    assert "secure" not in await cookie("http")
    assert "secure" not in await cookie(None)


async def test_the_page_runs_under_its_content_security_policy(site: Site, page: Any) -> None:
    """No CSP violation in the browser while the page renders tasks and their progress bars."""
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    task = await site.submit(long_text(300))
    await sign_in(page, site, await site.key())
    await expect(task_row(page, task.id)).to_be_visible()
    bar = task_row(page, task.id).locator(".bar i")
    assert (await bar.evaluate("node => node.style.width")).endswith("%")
    assert violations == []
