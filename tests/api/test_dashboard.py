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
import uuid
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


# ------------------------------------------------------------------------ the pages: tasks, kbs, docs, search

SCREENSHOT_VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS_ENV = "DOCVEC_SCREENSHOTS"
GUIDE = "# Guide\n\n" + "".join(
    f"## Part {i}\n\nThe lighthouse keeper wrote entry {i} about storms, tides and the long winter nights on the "
    f"rock, and about the ships that passed it in the fog of morning number {i}.\n\n" for i in range(8)
)
MARKUP = "# Markup\n\nThe <b>lighthouse</b> lamp <img src=x onerror=alert(1)> burns & storms pass.\n"


async def snapshot(page: Any, name: str) -> None:
    """Save the viewport as `$DOCVEC_SCREENSHOTS/<name>.png` when that variable is set (never by default)."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return
    await page.wait_for_function(SETTLED_JS, timeout=5_000)
    Path(folder).mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(Path(folder) / f"{name}.png"))


def insert_tasks(core: Core, kb: KbRecord, names: list[str], *, status: str = "queued", start: float) -> None:
    """Document and task rows for `names` written straight into the database, in bulk (no worker, no
    queue): the i-th name's task is created i seconds after `start`."""
    m = core.repo.tasks.m
    docs, tasks = [], []
    for i, name in enumerate(names):
        at = start + i
        doc_id, task_id = uuid.uuid4().hex, uuid.uuid4().hex
        docs.append({"id": doc_id, "kb": kb.id, "tenant": kb.tenant, "filename": name, "size_bytes": 100 + i,
                     "sha256": "0" * 64, "blob_key": f"kb/{kb.id}/{doc_id}", "status": status, "source_id": name,
                     "created_at": at, "updated_at": at})
        tasks.append({"id": task_id, "document": doc_id, "kb_id": kb.id, "tenant": kb.tenant, "status": status,
                      "parse_version": 1, "progress_msg": "", "created_at": at, "updated_at": at})
    with core.repo.transaction():
        for begin in range(0, len(names), 200):
            m.document.insert_many(docs[begin : begin + 200]).execute()
            m.task.insert_many(tasks[begin : begin + 200]).execute()


async def test_page_through_a_thousand_tasks_filter_by_name_and_tenant(site: Site, page: Any) -> None:
    core = site.core
    files = await ingest.create_kb(core, "files", tenant="alpha")
    reports = await ingest.create_kb(core, "reports", tenant="acme")
    start = time.time() - 3600
    await asyncio.to_thread(insert_tasks, core, files, [f"file-{i:04d}.md" for i in range(700)], start=start)
    await asyncio.to_thread(insert_tasks, core, reports, [f"Report-{i:04d}.pdf" for i in range(300)],
                            start=start + 1000)
    await page.set_viewport_size(SCREENSHOT_VIEWPORT)
    await sign_in(page, site, await site.key("ops"))  # an admin of a tenant with no tasks: all it sees is others'

    rng, first_file = page.get_by_test_id("tasks-range"), page.get_by_test_id("task-file").first
    await expect(rng).to_have_text("showing 1–50 of 1,000")
    await expect(page.get_by_test_id("task-row")).to_have_count(50)
    await expect(first_file).to_have_text("Report-0299.pdf")  # newest first
    await expect(page.get_by_test_id("task-tenant").first).to_have_text("acme")
    await expect(page.get_by_test_id("task-kb").first).to_have_text("reports")
    await expect(page.get_by_test_id("tasks-prev")).to_be_disabled()
    await snapshot(page, "tasks")
    await page.get_by_test_id("tasks-next").click()
    await expect(rng).to_have_text("showing 51–100 of 1,000")
    await expect(first_file).to_have_text("Report-0249.pdf")
    for _ in range(5):
        await page.get_by_test_id("tasks-next").click()
    await expect(rng).to_have_text("showing 301–350 of 1,000")
    await expect(first_file).to_have_text("file-0699.md")  # past acme's 300, into alpha's
    await page.get_by_test_id("tasks-prev").click()
    await expect(rng).to_have_text("showing 251–300 of 1,000")
    await expect(page.get_by_test_id("task-file").last).to_have_text("Report-0000.pdf")

    await page.get_by_test_id("filter-q").fill("report-00")  # ignoring case: Report-0000 .. Report-0099
    await expect(rng).to_have_text("showing 1–50 of 100")
    await expect(first_file).to_have_text("Report-0099.pdf")
    await page.get_by_test_id("tasks-next").click()
    await expect(rng).to_have_text("showing 51–100 of 100")
    await expect(page.get_by_test_id("tasks-next")).to_be_disabled()
    await page.get_by_test_id("filter-q").fill("FILE-069")
    await expect(rng).to_have_text("showing 1–10 of 10")
    await page.get_by_test_id("filter-q").fill("")
    await expect(rng).to_have_text("showing 1–50 of 1,000")

    await page.get_by_test_id("filter-tenant").select_option("alpha")
    await expect(rng).to_have_text("showing 1–50 of 700")
    await expect(page.get_by_test_id("task-tenant").filter(has_text="acme")).to_have_count(0)
    await page.get_by_test_id("filter-tenant").select_option("acme")
    await expect(rng).to_have_text("showing 1–50 of 300")
    await page.get_by_test_id("filter-status").select_option("cancelled")
    await expect(rng).to_have_text("showing 0–0 of 0")
    await page.get_by_test_id("filter-status").select_option("")

    # Cancel acts on the row's own tenant's task (the admin's key is of tenant "ops").
    row = page.get_by_test_id("task-row").first
    task_id = await row.get_attribute("data-task-id")
    await row.get_by_test_id("cancel-btn").click()
    await expect(page.get_by_test_id("action-message")).to_contain_text("cancelled")
    await expect(task_row(page, str(task_id)).get_by_test_id("task-status")).to_have_text("cancelled")
    assert (await asyncio.to_thread(core.repo.tasks.get, str(task_id))).status == "cancelled"
    await page.get_by_test_id("filter-status").select_option("cancelled")
    await expect(rng).to_have_text("showing 1–1 of 1")


async def test_browse_a_knowledge_base_its_documents_and_their_chunks(site: Site, page: Any) -> None:
    guide = await site.submit(GUIDE, name="guide.md")
    long_doc = await site.submit(long_text(4000), name="long.md")
    other = await site.submit(MARKUP, name="markup.md")
    async with running_worker(site.core, site.vectors, consumer="pages-worker"):
        for task in (guide, long_doc, other):
            await wait_db_status(site, task.id, "done", timeout_s=60)
    long_record = await asyncio.to_thread(site.core.repo.documents.get, long_doc.document_id)
    assert long_record.chunk_count > 50
    await page.set_viewport_size(SCREENSHOT_VIEWPORT)
    await sign_in(page, site, await site.key())

    await page.get_by_test_id("tab-kbs").click()
    kb_row = page.locator("[data-testid=kb-row][data-kb=docs]")
    await expect(kb_row.locator("[data-field=documents]")).to_have_text("3")
    total_chunks = sum([(await asyncio.to_thread(site.core.repo.documents.get, t.document_id)).chunk_count
                        for t in (guide, long_doc, other)])
    await expect(kb_row.locator("[data-field=chunks]")).to_have_text(f"{total_chunks:,}")
    await kb_row.get_by_role("link", name="docs").click()

    await expect(page.get_by_test_id("kb-title")).to_have_text("docs")
    await expect(page.get_by_test_id("kb-documents")).to_have_text("3")
    await expect(page.get_by_test_id("docs-range")).to_have_text("showing 1–3 of 3")
    long_row = page.locator(f"[data-testid=doc-row][data-document-id='{long_doc.document_id}']")
    await expect(long_row.get_by_test_id("doc-chunks")).to_have_text(f"{long_record.chunk_count:,}")
    await expect(long_row.get_by_test_id("doc-tokens")).to_have_text(f"{long_record.token_count:,}")
    await expect(long_row.get_by_test_id("doc-status")).to_have_text("done")
    await snapshot(page, "knowledge-base")
    await page.get_by_test_id("docs-q").fill("LONG")  # the file-name filter, ignoring case, on the server
    await expect(page.get_by_test_id("docs-range")).to_have_text("showing 1–1 of 1")
    await expect(page.get_by_test_id("doc-row")).to_have_count(1)
    await page.get_by_test_id("docs-q").fill("")
    await expect(page.get_by_test_id("docs-range")).to_have_text("showing 1–3 of 3")

    await long_row.get_by_role("link", name="long.md").click()
    await expect(page.get_by_test_id("doc-title")).to_have_text("long.md")
    await expect(page.get_by_test_id("chunks-version")).to_have_text("live version v1")
    await expect(page.get_by_test_id("chunks-range")).to_have_text(f"showing 1–50 of {long_record.chunk_count}")
    chunk_rows = page.get_by_test_id("chunk-row")
    await expect(chunk_rows).to_have_count(50)
    await expect(chunk_rows.first.get_by_test_id("chunk-title")).to_have_text("Long")
    await expect(chunk_rows.first.get_by_test_id("chunk-offsets")).to_have_text(re.compile(r"^\d[\d,]*–\d[\d,]*$"))
    await expect(chunk_rows.first.get_by_test_id("chunk-text")).to_contain_text("word")
    parse = page.get_by_test_id("parse-row")
    await expect(parse).to_have_count(1)
    await expect(parse.get_by_test_id("parse-status")).to_have_text("done")
    await expect(parse.get_by_test_id("parse-timings")).to_have_text(re.compile(r"\w+ \d+(\.\d+)? (ms|s)"))
    await page.get_by_test_id("parse-log-summary").click()
    await expect(page.get_by_test_id("parse-log")).to_contain_text("queued")
    await snapshot(page, "document")
    first_ordinal = await chunk_rows.first.get_attribute("data-ordinal")
    await page.get_by_test_id("chunks-next").click()
    await expect(page.get_by_test_id("chunks-range")).to_have_text(
        f"showing 51–{min(100, long_record.chunk_count)} of {long_record.chunk_count}")
    await expect(chunk_rows.first).not_to_have_attribute("data-ordinal", str(first_ordinal))
    await page.get_by_test_id("chunks-prev").click()
    await expect(chunk_rows.first).to_have_attribute("data-ordinal", str(first_ordinal))

    # Reparse and delete from the knowledge base's page (delete asks for a second click).
    await page.get_by_test_id("doc-kb-link").get_by_role("link", name="docs").click()
    guide_row = page.locator(f"[data-testid=doc-row][data-document-id='{guide.document_id}']")
    await guide_row.get_by_test_id("reparse-btn").click()
    await expect(page.get_by_test_id("kb-message")).to_contain_text("queued for a new parse")
    await expect(guide_row.get_by_test_id("doc-status")).to_have_text("queued")
    markup_row = page.locator(f"[data-testid=doc-row][data-document-id='{other.document_id}']")
    await markup_row.get_by_test_id("delete-btn").click()
    await expect(markup_row.get_by_test_id("delete-btn")).to_have_text("Confirm?")
    await markup_row.get_by_test_id("delete-btn").click()
    await expect(markup_row).to_have_count(0)
    await expect(page.get_by_test_id("docs-range")).to_have_text("showing 1–2 of 2")
    assert [d.id for d in await asyncio.to_thread(site.core.repo.documents.of_kb, guide.kb_id)].count(
        other.document_id) == 0


async def test_the_search_playground_highlights_the_query_in_escaped_text(site: Site, page: Any) -> None:
    tasks = [await site.submit(GUIDE, name="guide.md"), await site.submit(MARKUP, name="markup.md")]
    async with running_worker(site.core, site.vectors, consumer="search-worker"):
        for task in tasks:
            await wait_db_status(site, task.id, "done", timeout_s=60)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.set_viewport_size(SCREENSHOT_VIEWPORT)
    await sign_in(page, site, await site.key())
    await page.get_by_test_id("tab-search").click()
    await expect(page.get_by_test_id("search-kb")).to_have_value("default/docs")
    await page.get_by_test_id("search-query").fill("Lighthouse storms")
    await page.get_by_test_id("search-topk").fill("4")
    await page.get_by_test_id("search-submit").click()

    hits = page.get_by_test_id("hit")
    await expect(hits).to_have_count(4)
    await expect(page.get_by_test_id("search-summary")).to_have_text("4 hits")
    await expect(hits.first.get_by_test_id("hit-score")).to_have_text(re.compile(r"^-?\d\.\d{3}$"))
    marks = page.locator("[data-testid=hit-text] mark")
    assert await marks.count() >= 4
    assert {(await m.text_content() or "").lower() for m in await marks.all()} <= {"lighthouse", "storms"}
    sources = {await s.text_content() for s in await page.get_by_test_id("hit-source").all()}
    assert sources <= {"guide.md", "markup.md"} and "guide.md" in sources
    # Document text is text: the markup in it is shown, never made into elements.
    markup_hit = hits.filter(has=page.locator("[data-testid=hit-source]", has_text="markup.md"))
    await expect(markup_hit.get_by_test_id("hit-text")).to_contain_text("<img src=x onerror=alert(1)>")
    assert await page.locator("[data-testid=hit-text] img, [data-testid=hit-text] b").count() == 0
    assert dialogs == []
    await snapshot(page, "search")

    await page.get_by_test_id("search-filter").fill('filename == "markup.md"')
    await page.get_by_test_id("search-submit").click()
    await expect(hits).to_have_count(1)
    await expect(hits.first.get_by_test_id("hit-source")).to_have_text("markup.md")
    await hits.first.get_by_test_id("hit-source").click()
    await expect(page.get_by_test_id("doc-title")).to_have_text("markup.md")
    await page.get_by_test_id("tab-search").click()
    await page.get_by_test_id("search-filter").fill("no_such_field == 1")
    await page.get_by_test_id("search-submit").click()
    await expect(page.get_by_test_id("search-message")).to_be_visible()
    await expect(hits).to_have_count(0)


# ------------------------------------------------------------------------ issue 28, item 10: what an operator is shown


async def test_a_knowledge_base_that_does_not_exist_says_so_and_is_not_polled(site: Site, page: Any) -> None:
    await site.submit(GUIDE, name="guide.md")  # queued: the knowledge base "docs" has one document
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/kbs/nope" in request.url
            or "/documents/no-such-document" in request.url else None)
    await sign_in(page, site, await site.key())
    await page.evaluate("location.hash = '#/kb/default/docs'")
    await expect(page.get_by_test_id("kb-title")).to_have_text("docs")
    await expect(page.get_by_test_id("kb-documents")).to_have_text("1")
    await expect(page.get_by_test_id("doc-row")).to_have_count(1)

    await page.evaluate("location.hash = '#/kb/default/nope'")
    missing = page.get_by_test_id("kb-missing")
    await expect(missing).to_be_visible()
    await expect(missing).to_contain_text('Knowledge base "nope" not found')
    await expect(page.get_by_test_id("kb-title")).to_have_text("nope")  # not the previous one's
    for count in ("kb-documents", "kb-chunks", "kb-tokens", "kb-size"):
        await expect(page.get_by_test_id(count)).to_have_text("–")
    await expect(page.get_by_test_id("kb-meta")).to_have_text("")
    await expect(page.get_by_test_id("doc-row")).to_have_count(0)
    await expect(page.get_by_test_id("docs")).to_be_hidden()
    await expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "ok")  # the API is up
    # Polling goes on (the fleet, every poll) but the missing knowledge base is not asked for again.
    seen = len(asked)
    assert seen >= 1
    for _ in range(3):
        async with page.expect_response(lambda response: "/api/v1/fleet" in response.url):
            pass
    assert len(asked) == seen, asked
    # "Check again" asks once more; another knowledge base shows normally again.
    async with page.expect_request(lambda request: "/kbs/nope" in request.url):
        await page.get_by_test_id("kb-missing-retry").click()
    await expect(missing).to_be_visible()
    await page.evaluate("location.hash = '#/kb/default/docs'")
    await expect(missing).to_be_hidden()
    await expect(page.get_by_test_id("kb-documents")).to_have_text("1")
    await expect(page.get_by_test_id("docs")).to_be_visible()

    # A document that does not exist: the same, on its page.
    await page.get_by_test_id("doc-row").get_by_role("link", name="guide.md").click()
    await expect(page.get_by_test_id("doc-title")).to_have_text("guide.md")
    await page.evaluate("location.hash = '#/doc/default/no-such-document'")
    doc_missing = page.get_by_test_id("doc-missing")
    await expect(doc_missing).to_be_visible()
    await expect(doc_missing).to_contain_text("not found")
    await expect(page.get_by_test_id("doc-title")).not_to_have_text("guide.md")
    await expect(page.locator("#doc-size")).to_have_text("–")
    await expect(page.get_by_test_id("chunks")).to_be_hidden()
    seen = len(asked)
    for _ in range(2):
        async with page.expect_response(lambda response: "/api/v1/fleet" in response.url):
            pass
    assert len(asked) == seen, asked


async def test_a_bad_filter_shows_its_error_and_no_hit_count(site: Site, page: Any) -> None:
    task = await site.submit(GUIDE, name="guide.md")
    async with running_worker(site.core, site.vectors, consumer="filter-worker"):
        await wait_db_status(site, task.id, "done", timeout_s=60)
    await sign_in(page, site, await site.key())
    await page.get_by_test_id("tab-search").click()
    await page.get_by_test_id("search-query").fill("lighthouse")
    await page.get_by_test_id("search-submit").click()
    hits, summary, message = page.get_by_test_id("hit"), page.get_by_test_id("search-summary"), \
        page.get_by_test_id("search-message")
    await expect(summary).to_have_text("5 hits")
    await expect(hits).to_have_count(5)

    await page.get_by_test_id("search-filter").fill("no_such_field == 1")
    await page.get_by_test_id("search-submit").click()
    await expect(message).to_be_visible()
    await expect(message).to_contain_text("no_such_field")
    await expect(message).to_have_attribute("data-kind", "error")
    await expect(hits).to_have_count(0)
    await expect(summary).to_have_text("")  # not "5 hits" over an empty list
    await expect(page.locator("#search-empty")).to_be_hidden()  # an error, not "No hits."

    await page.get_by_test_id("search-filter").fill("")
    await page.get_by_test_id("search-submit").click()
    await expect(summary).to_have_text("5 hits")
    await expect(message).to_be_hidden()


async def test_the_last_error_shows_its_reason_and_the_whole_error_on_demand(site: Site, page: Any) -> None:
    task = await site.submit("", name="zero.pdf")  # nothing in it: fails with "document is empty; ..."
    async with running_worker(site.core, site.vectors, consumer="error-worker"):
        failed = await wait_db_status(site, task.id, "failed", timeout_s=60)
    assert failed.error is not None and failed.error.startswith('file "zero.pdf": document is empty')
    await sign_in(page, site, await site.key())
    row = task_row(page, task.id)
    await expect(row.get_by_test_id("task-status")).to_have_text("failed")
    reason = row.get_by_test_id("task-error")
    # The file column already names the file: the cell starts with the reason, and the whole error is its tooltip.
    await expect(reason).to_have_text(re.compile(r"^document is empty"))
    await expect(row.locator("[data-field=error]")).to_have_attribute("title", failed.error)
    assert await reason.evaluate("node => node.getBoundingClientRect().height > 0")
    # Opened, the whole error is shown, nothing of it clipped; it stays open while the page polls.
    await reason.click()
    full = row.get_by_test_id("task-error-full")
    await expect(full).to_be_visible()
    await expect(full).to_have_text(failed.error)
    assert await full.evaluate("node => node.scrollHeight <= node.clientHeight + 1 "
                               "&& node.scrollWidth <= node.clientWidth + 1"), "the opened error is clipped"
    for _ in range(2):
        async with page.expect_response(lambda response: "/api/v1/tasks" in response.url):
            pass
    await expect(full).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
        "the tasks page scrolls horizontally at 1366x768"
    # The document's page shows its parses' errors the same way.
    await row.get_by_test_id("task-file").get_by_role("link").click()
    parse_reason = page.get_by_test_id("parse-row").get_by_test_id("task-error")
    await expect(parse_reason).to_have_text(re.compile(r"^document is empty"))
