"""API keys and tenancy: every route is scoped by the caller's key, and keys are stored hashed."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.deps import KEY_COOKIE
from common.runtime import Core
from tests.api.conftest import ClientFactory, issue_key
from tests.worker.helpers import running_worker

API = "/api/v1"
TEXT = "# Owls\n\nOwls hunt at night and swallow their prey whole.\n"


async def _kb_with_document(http: httpx.AsyncClient, kb: str = "docs") -> dict[str, Any]:
    assert (await http.post(f"{API}/kbs", json={"name": kb})).status_code == 201
    upload = await http.post(f"{API}/kbs/{kb}/documents", files=[("files", ("owls.md", TEXT.encode()))])
    assert upload.status_code == 202, upload.text
    return upload.json()["documents"][0]


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", f"{API}/kbs"), ("post", f"{API}/kbs"), ("get", f"{API}/kbs/docs"), ("get", f"{API}/tasks"),
     ("get", f"{API}/tasks/x"), ("get", f"{API}/tasks/x/events"), ("post", f"{API}/kbs/docs/search"),
     ("get", f"{API}/documents/x"), ("delete", f"{API}/documents/x"), ("get", f"{API}/me"),
     ("get", f"{API}/keys")],
)
async def test_missing_key_is_401(anon_client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await anon_client.request(method, path)
    _assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer dvk_not-a-real-key", "Bearer ", "Basic dXNlcjpwYXNz", "dvk_x", "Bearer x"])
async def test_invalid_key_is_401(anon_client: httpx.AsyncClient, header: str) -> None:
    _assert_error(await anon_client.get(f"{API}/kbs", headers={"Authorization": header}), 401, "unauthorized")


async def test_revoked_key_is_401(app: FastAPI, make_client: ClientFactory) -> None:
    issued = await issue_key(app, "acme")
    headers = {"Authorization": f"Bearer {issued.secret}"}
    admin = await make_client("root", admin=True)
    http = await make_client(None)
    assert (await http.get(f"{API}/kbs", headers=headers)).status_code == 200
    revoked = await admin.delete(f"{API}/keys/{issued.record.id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    _assert_error(await http.get(f"{API}/kbs", headers=headers), 401, "unauthorized")


async def test_cookie_authenticates_like_the_header(app: FastAPI, anon_client: httpx.AsyncClient) -> None:
    issued = await issue_key(app, "acme", admin=True)
    anon_client.cookies.set(KEY_COOKIE, issued.secret)
    me = await anon_client.get(f"{API}/me")
    assert me.status_code == 200
    assert me.json() == {"tenant": "acme", "is_admin": True, "key_id": issued.record.id}
    anon_client.cookies.set(KEY_COOKIE, "dvk_wrong")
    _assert_error(await anon_client.get(f"{API}/me"), 401, "unauthorized")


async def test_health_endpoints_need_no_key(anon_client: httpx.AsyncClient) -> None:
    assert (await anon_client.get("/healthz")).status_code == 200
    assert (await anon_client.get("/readyz")).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), [
    ("get", f"{API}/keys", None),
    ("post", f"{API}/keys", {"tenant": "acme"}),
    ("delete", f"{API}/keys/abc", None),
])
async def test_admin_routes_forbid_tenant_keys(client: httpx.AsyncClient, method: str, path: str,
                                               body: Any) -> None:
    _assert_error(await client.request(method, path, json=body), 403, "forbidden")


async def test_admin_creates_keys_that_work(admin_client: httpx.AsyncClient, anon_client: httpx.AsyncClient) -> None:
    created = await admin_client.post(f"{API}/keys", json={"tenant": "acme", "name": "ci"})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert created.json()["prefix"] == key[:12] and not created.json()["is_admin"]
    me = await anon_client.get(f"{API}/me", headers={"Authorization": f"Bearer {key}"})
    assert me.json()["tenant"] == "acme" and me.json()["is_admin"] is False
    listed = (await admin_client.get(f"{API}/keys", params={"tenant": "acme"})).json()
    assert [k["id"] for k in listed] == [created.json()["id"]]
    assert all("key" not in k for k in listed)


async def test_a_tenant_cannot_touch_another_tenants_objects(make_client: ClientFactory) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    doc = await _kb_with_document(alice)
    doc_id, task_id = doc["document_id"], doc["task_id"]

    assert (await bob.get(f"{API}/kbs")).json() == []
    assert (await bob.get(f"{API}/tasks")).json() == []
    attempts = [
        ("get", f"{API}/kbs/docs", None),
        ("get", f"{API}/kbs/docs/documents", None),
        ("post", f"{API}/kbs/docs/search", {"query": "owls"}),
        ("get", f"{API}/tasks?kb=docs", None),
        ("get", f"{API}/documents/{doc_id}", None),
        ("post", f"{API}/documents/{doc_id}/reparse", None),
        ("get", f"{API}/tasks/{task_id}", None),
        ("get", f"{API}/tasks/{task_id}/events", None),
        ("post", f"{API}/tasks/{task_id}/cancel", None),
        ("post", f"{API}/tasks/{task_id}/retry", None),
        ("delete", f"{API}/documents/{doc_id}", None),
        ("delete", f"{API}/kbs/docs", None),
    ]
    for method, path, body in attempts:
        _assert_error(await bob.request(method, path, json=body), 404, "not_found")
    upload = await bob.post(f"{API}/kbs/docs/documents", files=[("files", ("x.md", b"# x\n\ny\n"))])
    _assert_error(upload, 404, "not_found")

    # Nothing of alice's changed, and bob's own kb of the same name is a different one.
    assert (await alice.get(f"{API}/documents/{doc_id}")).status_code == 200
    assert (await alice.get(f"{API}/tasks/{task_id}")).json()["status"] == "queued"
    assert [t["id"] for t in (await alice.get(f"{API}/tasks")).json()] == [task_id]
    assert (await bob.post(f"{API}/kbs", json={"name": "docs"})).status_code == 201
    assert (await bob.get(f"{API}/kbs/docs/documents")).json() == []
    assert len((await alice.get(f"{API}/kbs/docs/documents")).json()) == 1


async def test_search_never_returns_another_tenants_chunks(make_client: ClientFactory, core: Core,
                                                           vectors: Any) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    doc = await _kb_with_document(alice)
    await bob.post(f"{API}/kbs", json={"name": "docs"})
    async with running_worker(core, vectors):
        async with asyncio.timeout(30):
            while (await alice.get(f"{API}/tasks/{doc['task_id']}")).json()["status"] not in ("done", "failed"):
                await asyncio.sleep(0.05)
    assert (await alice.post(f"{API}/kbs/docs/search", json={"query": "owls"})).json()["hits"]
    assert (await bob.post(f"{API}/kbs/docs/search", json={"query": "owls"})).json()["hits"] == []


async def test_an_admin_key_acts_as_its_own_tenant(make_client: ClientFactory) -> None:
    ops_admin, ops, other_admin = (await make_client("ops", admin=True), await make_client("ops"),
                                   await make_client("other", admin=True))
    await _kb_with_document(ops_admin, "shared")
    assert [kb["name"] for kb in (await ops.get(f"{API}/kbs")).json()] == ["shared"]
    assert (await other_admin.get(f"{API}/kbs")).json() == []
    _assert_error(await other_admin.get(f"{API}/kbs/shared"), 404, "not_found")


async def test_keys_are_stored_hashed(app: FastAPI, core: Core) -> None:
    issued = await issue_key(app, "acme")
    database = core.repo.database

    def rows() -> list[tuple[Any, ...]]:
        with database.connection_context():
            return list(database.execute_sql("SELECT * FROM api_key").fetchall())

    stored = await asyncio.to_thread(rows)
    assert len(stored) == 1
    assert not any(issued.secret in str(value) for value in stored[0])
    assert hashlib.sha256(issued.secret.encode()).hexdigest() in stored[0]
    files = list(Path(core.settings.data_path).glob("docvec.db*"))  # the database and its WAL
    assert files
    for path in files:
        assert issued.secret.encode() not in await asyncio.to_thread(path.read_bytes)


async def test_keys_are_unique_and_unguessable(app: FastAPI) -> None:
    secrets = {(await issue_key(app, "acme")).secret for _ in range(20)}
    assert len(secrets) == 20 and all(len(s) >= 40 for s in secrets)
