"""`GET /tasks/{id}/events`: Server-Sent Events from a real uvicorn, read by a streaming HTTP client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.routes import tasks as task_routes
from tests.api.live import LiveApi

API = "/api/v1"
TEXT = "# Tides\n\n" + "The moon pulls the oceans and the tides follow it around the Earth. " * 40 + "\n"
MAX_EVENTS = 2000
STREAM_TIMEOUT_S = 60.0


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """Parse an event stream into (event, JSON data); comment lines come out as (':', text)."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield ":", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


async def _client(live_api: LiveApi, tenant: str = "acme") -> httpx.AsyncClient:
    issued = await asyncio.to_thread(live_api.issue_key, tenant)
    return httpx.AsyncClient(base_url=live_api.url, headers={"Authorization": f"Bearer {issued.secret}"},
                             timeout=httpx.Timeout(30.0))


async def _queued_task(http: httpx.AsyncClient) -> str:
    assert (await http.post(f"{API}/kbs", json={"name": "docs"})).status_code == 201
    upload = await http.post(f"{API}/kbs/docs/documents", files=[("files", ("tides.md", TEXT.encode()))])
    assert upload.status_code == 202, upload.text
    return str(upload.json()["documents"][0]["task_id"])


async def _collect(http: httpx.AsyncClient, task_id: str, on_first: Any = None,
                   params: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    async with asyncio.timeout(STREAM_TIMEOUT_S):
        async with http.stream("GET", f"{API}/tasks/{task_id}/events", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for item in _events(response):
                seen.append(item)
                if len(seen) == 1 and on_first is not None:
                    on_first()
                assert len(seen) < MAX_EVENTS, "the stream never ended"
    return seen


async def test_progress_events_from_queued_to_done(live_api: LiveApi) -> None:
    async with await _client(live_api) as http:
        task_id = await _queued_task(http)
        # The worker starts only once the stream has sent the queued state: every transition is seen live.
        seen = await _collect(http, task_id, on_first=live_api.start_worker)

    events = [(name, data) for name, data in seen if name != ":"]
    first_name, first = events[0]
    assert first_name == "state" and first["id"] == task_id and first["status"] == "queued"
    progress = [data for name, data in events if name == "progress"]
    assert progress and all(p["task_id"] == task_id for p in progress)
    stages = {p["stage"] for p in progress}
    assert {"fetch", "parse", "chunk", "embed", "index"} <= stages, stages
    values = [p["progress"] for p in progress]
    assert values == sorted(values), "progress went backwards"
    names = [name for name, _ in events]
    assert "done" in names and names.index("done") > names.index("progress")
    last_name, last = events[-1]
    assert last_name == "state" and last["status"] == "done" and last["progress"] == 1.0


async def test_a_finished_task_sends_its_state_and_ends(live_api: LiveApi) -> None:
    async with await _client(live_api) as http:
        task_id = await _queued_task(http)
        assert (await http.post(f"{API}/tasks/{task_id}/cancel")).status_code == 200
        seen = await _collect(http, task_id)
    assert [name for name, _ in seen] == ["state"]
    assert seen[0][1]["status"] == "cancelled"


async def test_heartbeats_notice_a_cancel_that_published_nothing(live_api: LiveApi,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_routes, "SSE_HEARTBEAT_S", 0.2)
    async with await _client(live_api) as http:
        task_id = await _queued_task(http)

        async def cancel_soon() -> None:
            await asyncio.sleep(0.5)
            assert (await http.post(f"{API}/tasks/{task_id}/cancel")).status_code == 200

        async with asyncio.TaskGroup() as group:
            group.create_task(cancel_soon())
            seen = await _collect(http, task_id)
    names = [name for name, _ in seen]
    assert names[0] == "state" and ":" in names
    assert names[-1] == "state" and seen[-1][1]["status"] == "cancelled"


async def test_a_stream_ends_at_its_max_lifetime(live_api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_routes, "SSE_HEARTBEAT_S", 0.2)
    monkeypatch.setattr(task_routes, "SSE_MAX_LIFETIME_S", 1.0)
    async with await _client(live_api) as http:
        task_id = await _queued_task(http)
        seen = await _collect(http, task_id)
        assert (await http.get(f"{API}/tasks/{task_id}")).json()["status"] == "queued"
    assert seen[0][0] == "state" and seen[0][1]["status"] == "queued"
    assert all(name in ("state", ":") for name, _ in seen)


async def test_another_tenant_gets_404_not_a_stream(live_api: LiveApi) -> None:
    async with await _client(live_api, "owner") as owner, await _client(live_api, "intruder") as intruder:
        task_id = await _queued_task(owner)
        response = await intruder.get(f"{API}/tasks/{task_id}/events")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_an_admin_streams_another_tenants_task_only_when_it_names_the_tenant(live_api: LiveApi) -> None:
    admin_key = (await asyncio.to_thread(live_api.issue_key, "ops", admin=True)).secret
    async with await _client(live_api, "owner") as owner, httpx.AsyncClient(
            base_url=live_api.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30) as admin:
        task_id = await _queued_task(owner)
        assert (await owner.post(f"{API}/tasks/{task_id}/cancel")).status_code == 200
        assert (await admin.get(f"{API}/tasks/{task_id}/events")).status_code == 404  # its own tenant by default
        seen = await _collect(admin, task_id, params={"tenant": "owner"})
        refused = await owner.get(f"{API}/tasks/{task_id}/events", params={"tenant": "owner"})
    assert [name for name, _ in seen] == ["state"] and seen[0][1]["status"] == "cancelled"
    assert refused.status_code == 403  # tenant= is for admin keys


async def test_a_revoked_key_ends_its_open_stream(live_api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is checked again at every heartbeat: revoking it ends a stream already open (it used to
    run on for up to an hour), and the task itself is untouched."""
    monkeypatch.setattr(task_routes, "SSE_HEARTBEAT_S", 0.2)
    issued = await asyncio.to_thread(live_api.issue_key, "acme")
    headers = {"Authorization": f"Bearer {issued.secret}"}
    async with httpx.AsyncClient(base_url=live_api.url, headers=headers, timeout=httpx.Timeout(30.0)) as http:
        task_id = await _queued_task(http)
        seen = await _collect(http, task_id, on_first=lambda: live_api.revoke_key(issued.record.id))
        assert (await http.get(f"{API}/tasks/{task_id}")).status_code == 401
    names = [name for name, _ in seen]
    assert names[0] == "state" and seen[0][1]["status"] == "queued"
    assert names[-1] == "error" and "revoked" in seen[-1][1]["message"]
