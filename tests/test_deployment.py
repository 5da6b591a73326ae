"""The separate-services deployment: a `docvec vectordb` server, three worker processes and the
API, all sharing one Redis and one database; documents uploaded through the API are spread across
the workers, written through the server, and found by the API's search."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import vectordb
from api.app import create_app
from common.runtime import open_core
from tests.fakes import HashEmbedder
from tests.worker.fleet import Fleet, wait_until

pytestmark = pytest.mark.slow

API = "/api/v1"
TOPICS = {
    "rivers.md": "The Amazon river carries more water than any other river on Earth.",
    "bread.md": "Sourdough bread rises because wild yeast in the starter ferments the flour.",
    "planets.md": "Saturn has bright rings made of countless pieces of water ice.",
    "tea.md": "Tea was first drunk in south-western China where the tea plant grows wild.",
    "bikes.md": "A bicycle chain should be cleaned and oiled every few hundred kilometres.",
    "bees.md": "Honey bees communicate the direction of flowers with a waggle dance.",
}


async def test_three_workers_and_the_api_share_one_vector_store(fleet: Fleet) -> None:
    for name in ("w1", "w2", "w3"):
        fleet.start_worker(name, embed_delay_s=0.2, concurrency=1)
    settings = fleet.settings()
    async with open_core(settings, embedder=HashEmbedder()) as core:
        vectors = vectordb.connect(fleet.vectordb_url)
        app = create_app(settings, core=core, vectors=vectors)
        try:
            async with app.router.lifespan_context(app):
                key = await asyncio.to_thread(app.state.services.apikeys.create, "default")
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://docvec.test",
                                             headers={"Authorization": f"Bearer {key.secret}"}) as http:
                    assert (await http.post(f"{API}/kbs", json={"name": "fleet"})).status_code == 201
                    files = [("files", (name, f"# {name}\n\n{text}\n".encode())) for name, text in TOPICS.items()]
                    body = (await http.post(f"{API}/kbs/fleet/documents", files=files)).json()
                    task_ids = [d["task_id"] for d in body["documents"]]

                    async def all_done() -> list[dict[str, Any]] | None:
                        tasks = [(await http.get(f"{API}/tasks/{t}")).json() for t in task_ids]
                        return tasks if all(t["status"] == "done" for t in tasks) else None

                    tasks = await wait_until(all_done, 90, "every document to be indexed", fleet)
                    assert len({t["worker"] for t in tasks}) >= 2, "the work was spread across workers"
                    hits = (await http.post(f"{API}/kbs/fleet/search",
                                            json={"query": "rings of ice around Saturn", "top_k": 3})).json()["hits"]
                    assert hits[0]["filename"] == "planets.md"
        finally:
            await vectors.close()
