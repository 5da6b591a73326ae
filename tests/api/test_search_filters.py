"""Hostile search filters through the docvec API (a real uvicorn, a real redis-server, a worker): the `like`
filter that froze the API, its worker and its store answers while /healthz keeps answering, and filters
that nest too deep or cost too much are 400s that say why, never a 500."""

from __future__ import annotations

import asyncio

import httpx

from .live import LiveApi
from .test_app import _wait_done
from .test_sse import _client

API = "/api/v1"
FREEZER = 'text like "' + "%a" * 500 + '%"'  # ~1 KB: under the API's 4,096-character cap
NESTED = "-" * 2000 + "1 == page"


async def test_hostile_filters_answer_while_the_api_keeps_serving(live_api: LiveApi) -> None:
    live_api.start_worker()
    async with await _client(live_api) as http:
        assert (await http.post(f"{API}/kbs", json={"name": "docs"})).status_code == 201
        text = "# Tea\n\n" + "\n\n".join(f"Paragraph {i}: a cup of tea, brewed and steeped, " + "a" * 600
                                         for i in range(12))
        upload = await http.post(f"{API}/kbs/docs/documents", files=[("files", ("tea.md", text.encode()))])
        assert upload.status_code == 202, upload.text
        assert (await _wait_done(http, upload.json()["documents"][0]["task_id"]))["status"] == "done"

        hostile = [asyncio.create_task(http.post(f"{API}/kbs/docs/search", timeout=120,
                                                 json={"query": "tea", "filter": FREEZER, "top_k": 3}))
                   for _ in range(2)]
        async with httpx.AsyncClient(base_url=live_api.url, timeout=10) as health:
            for _ in range(5):  # answered meanwhile: nothing holds the loop or the GIL
                assert (await health.get("/healthz")).status_code == 200
        for reply in await asyncio.gather(*hostile):
            assert reply.status_code == 200, reply.text
            assert reply.json()["hits"], "chunks with 500 'a's match"

        nested = await http.post(f"{API}/kbs/docs/search", json={"query": "tea", "filter": NESTED})
        assert nested.status_code == 400, nested.text
        assert nested.json()["error"]["code"] == "invalid_filter"
        assert "levels deep" in nested.json()["error"]["message"]

        unterminated = await http.post(f"{API}/kbs/docs/search", json={"query": "tea", "filter": "text like 'x"})
        assert unterminated.status_code == 400 and unterminated.json()["error"]["code"] == "invalid_filter"

        assert (await http.post(f"{API}/kbs/docs/search", json={"query": "tea", "filter": 'text like "%steeped%"'})
                ).json()["hits"], "an ordinary like filter still finds the chunks"
