"""What the dashboard's pages read, over HTTP: paged task lists with totals and file-name search, knowledge
bases with their documents' totals, a document's live chunks, and the admin's `tenant=` (every other key
reaches its own tenant only: another tenant's objects are 404, `tenant=` is 403)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from common.runtime import Core
from tests.api.conftest import ClientFactory
from tests.worker.helpers import running_worker, wait_for_status

API = "/api/v1"

GUIDE = "# Guide\n\n" + "".join(
    f"## Part {i}\n\nThe lighthouse keeper wrote entry {i} about storms, tides and the long winter nights "
    f"on the rock, and about the ships that passed it in the fog of morning number {i}.\n\n" for i in range(12)
)


async def _kb_with(http: httpx.AsyncClient, kb: str, names: list[str], **params: str) -> list[dict[str, Any]]:
    created = await http.post(f"{API}/kbs", json={"name": kb}, params=params)
    assert created.status_code == 201, created.text
    upload = await http.post(f"{API}/kbs/{kb}/documents", params=params,
                             files=[("files", (name, f"# {name}\n\ntext of {name}\n".encode())) for name in names])
    assert upload.status_code == 202, upload.text
    return list(upload.json()["documents"])


async def _ingested(http: httpx.AsyncClient, core: Core, vectors: Any, kb: str, name: str, text: str) -> str:
    """The id of a document ingested to done."""
    await http.post(f"{API}/kbs", json={"name": kb})
    upload = await http.post(f"{API}/kbs/{kb}/documents", files=[("files", (name, text.encode()))])
    assert upload.status_code == 202, upload.text
    doc = upload.json()["documents"][0]
    async with running_worker(core, vectors):
        task = await wait_for_status(core, doc["task_id"], timeout_s=30)
    assert task.status == "done", task.error
    return str(doc["document_id"])


async def test_task_list_pages_with_a_total_names_and_file_name_search(client: httpx.AsyncClient) -> None:
    await _kb_with(client, "docs", ["Alpha_report.md", "beta-notes.md", "GAMMA_REPORT.txt", "100%.txt"])
    first = await client.get(f"{API}/tasks", params={"limit": 3})
    assert first.status_code == 200 and first.headers["x-total-count"] == "4"
    rest = await client.get(f"{API}/tasks", params={"limit": 3, "offset": 3})
    assert rest.headers["x-total-count"] == "4" and len(first.json()) == 3 and len(rest.json()) == 1
    rows = first.json() + rest.json()
    assert sorted(r["filename"] for r in rows) == sorted(["Alpha_report.md", "beta-notes.md", "GAMMA_REPORT.txt",
                                                          "100%.txt"])
    assert {(r["kb_name"], r["tenant"]) for r in rows} == {("docs", "default")}
    found = await client.get(f"{API}/tasks", params={"q": "report"})
    assert sorted(r["filename"] for r in found.json()) == ["Alpha_report.md", "GAMMA_REPORT.txt"]
    assert found.headers["x-total-count"] == "2"
    assert [r["filename"] for r in (await client.get(f"{API}/tasks", params={"q": "%"})).json()] == ["100%.txt"]
    assert (await client.get(f"{API}/tasks", params={"q": "a%r"})).json() == []
    one = rows[0]
    by_doc = (await client.get(f"{API}/tasks", params={"document_id": one["document_id"]})).json()
    assert [t["id"] for t in by_doc] == [one["id"]]
    none = await client.get(f"{API}/tasks", params={"status": "done", "kb": "docs"})
    assert none.json() == [] and none.headers["x-total-count"] == "0"


async def test_tasks_are_looked_up_by_id_in_one_request(client: httpx.AsyncClient) -> None:
    submitted = await _kb_with(client, "docs", [f"f{i}.md" for i in range(5)])
    wanted = [submitted[i]["task_id"] for i in (0, 2, 4)]
    response = await client.get(f"{API}/tasks", params={"id": [*wanted, "no-such-task"]})
    assert response.status_code == 200 and response.headers["X-Total-Count"] == "3"
    assert sorted(t["id"] for t in response.json()) == sorted(wanted)
    assert {t["filename"] for t in response.json()} == {"f0.md", "f2.md", "f4.md"}


async def test_a_knowledge_bases_documents_page_with_a_total_and_search(client: httpx.AsyncClient) -> None:
    await _kb_with(client, "docs", ["Alpha_report.md", "beta-notes.md", "GAMMA_REPORT.txt"])
    first = await client.get(f"{API}/kbs/docs/documents", params={"limit": 2})
    assert (len(first.json()), first.headers["x-total-count"]) == (2, "3")
    rest = await client.get(f"{API}/kbs/docs/documents", params={"limit": 2, "offset": 2})
    assert (len(rest.json()), rest.headers["x-total-count"]) == (1, "3")
    found = await client.get(f"{API}/kbs/docs/documents", params={"q": "REPORT"})
    assert sorted(d["filename"] for d in found.json()) == ["Alpha_report.md", "GAMMA_REPORT.txt"]
    assert found.headers["x-total-count"] == "2"
    queued = await client.get(f"{API}/kbs/docs/documents", params={"status": "queued", "q": "notes"})
    assert [d["filename"] for d in queued.json()] == ["beta-notes.md"]
    assert (await client.get(f"{API}/kbs/docs/documents", params={"status": "done"})).headers["x-total-count"] == "0"
    assert (await client.get(f"{API}/kbs/docs/documents", params={"status": "bogus"})).status_code == 422


async def test_knowledge_bases_carry_their_documents_totals(client: httpx.AsyncClient, core: Core,
                                                            vectors: Any) -> None:
    await _ingested(client, core, vectors, "guide", "guide.md", GUIDE)
    assert (await client.post(f"{API}/kbs", json={"name": "empty"})).status_code == 201
    listed = {kb["name"]: kb for kb in (await client.get(f"{API}/kbs")).json()}
    guide = listed["guide"]
    assert guide["document_count"] == 1 and guide["size_bytes"] == len(GUIDE.encode())
    assert guide["chunk_count"] > 1 and guide["token_count"] >= guide["chunk_count"]
    assert (listed["empty"]["document_count"], listed["empty"]["chunk_count"]) == (0, 0)
    one = (await client.get(f"{API}/kbs/guide")).json()
    assert one["chunk_count"] == guide["chunk_count"] and one["document_count"] == 1


async def test_a_documents_live_chunks_in_order_paged(client: httpx.AsyncClient, core: Core, vectors: Any) -> None:
    document_id = await _ingested(client, core, vectors, "guide", "guide.md", GUIDE)
    document = (await client.get(f"{API}/documents/{document_id}")).json()
    whole = (await client.get(f"{API}/documents/{document_id}/chunks", params={"limit": 500})).json()
    assert whole["parse_version"] == document["parse_version"] == 1
    assert whole["total"] == document["chunk_count"] == len(whole["chunks"]) > 2
    ordinals = [c["ordinal"] for c in whole["chunks"]]
    assert ordinals == sorted(ordinals) and len(set(ordinals)) == len(ordinals)
    assert all(c["title"].startswith("Guide") and c["text"] and c["page"] is None for c in whole["chunks"])
    assert all(0 <= c["start_char"] < c["end_char"] for c in whole["chunks"])
    starts = [c["start_char"] for c in whole["chunks"]]
    assert starts == sorted(starts)
    page = (await client.get(f"{API}/documents/{document_id}/chunks", params={"limit": 2, "offset": 1})).json()
    assert [c["chunk_id"] for c in page["chunks"]] == [c["chunk_id"] for c in whole["chunks"][1:3]]
    assert (page["total"], page["offset"]) == (whole["total"], 1)
    beyond = (await client.get(f"{API}/documents/{document_id}/chunks", params={"offset": 10_000})).json()
    assert beyond["chunks"] == [] and beyond["total"] == whole["total"]

    # A reparse is not live until it is done: the chunks shown stay those of version 1.
    reparse = await client.post(f"{API}/documents/{document_id}/reparse")
    assert reparse.status_code == 202
    again = (await client.get(f"{API}/documents/{document_id}/chunks", params={"limit": 500})).json()
    assert again["parse_version"] == 1 and again["chunks"] == whole["chunks"]


async def test_a_document_not_yet_parsed_has_no_chunks(client: httpx.AsyncClient) -> None:
    (doc,) = await _kb_with(client, "docs", ["a.md"])
    chunks = (await client.get(f"{API}/documents/{doc['document_id']}/chunks")).json()
    assert (chunks["parse_version"], chunks["total"], chunks["chunks"]) == (0, 0, [])


async def test_other_tenants_objects_are_out_of_reach_of_non_admins(make_client: ClientFactory, core: Core,
                                                                    vectors: Any) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    doc_id = await _ingested(alice, core, vectors, "private", "secret.md", GUIDE)
    task_id = (await alice.get(f"{API}/tasks")).json()[0]["id"]
    await _kb_with(bob, "bobs", ["mine.md"])

    assert [t["filename"] for t in (await bob.get(f"{API}/tasks")).json()] == ["mine.md"]
    assert (await bob.get(f"{API}/tasks", params={"q": "secret"})).json() == []
    assert (await bob.get(f"{API}/tasks", params={"document_id": doc_id})).json() == []
    assert (await bob.get(f"{API}/tasks", params={"id": [task_id]})).json() == []  # a batched look-up, too
    assert [kb["name"] for kb in (await bob.get(f"{API}/kbs")).json()] == ["bobs"]
    for path in (f"/documents/{doc_id}", f"/documents/{doc_id}/chunks", f"/tasks/{task_id}", "/kbs/private",
                 "/kbs/private/documents"):
        response = await bob.get(API + path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    for path in (f"/tasks/{task_id}/cancel", f"/documents/{doc_id}/reparse"):
        assert (await bob.post(API + path)).status_code == 404, path
    assert (await bob.post(f"{API}/kbs/private/search", json={"query": "lighthouse"})).status_code == 404
    assert (await bob.delete(f"{API}/documents/{doc_id}")).status_code == 404

    # `tenant=` is an admin's: any other key gets 403, whichever tenant it names (its own included).
    for params in ({"tenant": "alice"}, {"tenant": "*"}, {"tenant": "bob"}):
        refused = await bob.get(f"{API}/tasks", params=params)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", params
    assert (await bob.get(f"{API}/documents/{doc_id}/chunks", params={"tenant": "alice"})).status_code == 403
    assert (await bob.post(f"{API}/tasks/{task_id}/retry", params={"tenant": "alice"})).status_code == 403
    assert (await alice.get(f"{API}/documents/{doc_id}")).status_code == 200


async def test_an_admin_sees_every_tenant_and_acts_on_one_only_when_it_names_it(make_client: ClientFactory) -> None:
    admin = await make_client("ops", admin=True)
    alice, bob = await make_client("alice"), await make_client("bob")
    (alice_doc,) = await _kb_with(alice, "docs", ["alice.md"])
    (bob_doc,) = await _kb_with(bob, "docs", ["bob.md"])
    await _kb_with(admin, "ops-kb", ["ops.md"])

    assert [t["filename"] for t in (await admin.get(f"{API}/tasks")).json()] == ["ops.md"]  # by default its own
    everyone = await admin.get(f"{API}/tasks", params={"tenant": "*"})
    assert everyone.headers["x-total-count"] == "3"
    assert {(t["tenant"], t["filename"]) for t in everyone.json()} == {
        ("alice", "alice.md"), ("bob", "bob.md"), ("ops", "ops.md")}
    only_bob = (await admin.get(f"{API}/tasks", params={"tenant": "bob"})).json()
    assert [t["filename"] for t in only_bob] == ["bob.md"]
    docs_anywhere = (await admin.get(f"{API}/tasks", params={"tenant": "*", "kb": "docs"})).json()
    assert sorted(t["tenant"] for t in docs_anywhere) == ["alice", "bob"]
    kbs = (await admin.get(f"{API}/kbs", params={"tenant": "*"})).json()
    assert [(kb["tenant"], kb["name"]) for kb in kbs] == [("alice", "docs"), ("bob", "docs"), ("ops", "ops-kb")]
    assert (await admin.get(f"{API}/kbs/docs/documents", params={"tenant": "bob"})).json()[0]["filename"] == "bob.md"

    # Acting on another tenant's task: only with that tenant named; never through another tenant.
    task_id = bob_doc["task_id"]
    assert (await admin.post(f"{API}/tasks/{task_id}/cancel")).status_code == 404
    assert (await admin.post(f"{API}/tasks/{task_id}/cancel", params={"tenant": "alice"})).status_code == 404
    cancelled = await admin.post(f"{API}/tasks/{task_id}/cancel", params={"tenant": "bob"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await bob.get(f"{API}/tasks/{task_id}")).json()["status"] == "cancelled"
    retried = await admin.post(f"{API}/tasks/{task_id}/retry", params={"tenant": "bob"})
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert (await alice.get(f"{API}/tasks/{alice_doc['task_id']}")).json()["status"] == "queued"
    assert (await admin.get(f"{API}/documents/{alice_doc['document_id']}/chunks",
                            params={"tenant": "alice"})).status_code == 200
    assert (await admin.get(f"{API}/documents/{alice_doc['document_id']}/chunks")).status_code == 404


@pytest.mark.parametrize(("path", "params"), [
    ("/tasks", {"limit": 0}),
    ("/tasks", {"limit": 1001}),
    ("/tasks", {"offset": -1}),
    ("/tasks", {"status": "bogus"}),
    ("/tasks", {"q": "x" * 256}),
    ("/tasks", {"tenant": "no spaces"}),
    ("/tasks", {"tenant": ""}),
    ("/tasks", {"document_id": "x" * 65}),
    ("/tasks", {"id": [f"t{i}" for i in range(101)]}),  # over MAX_TASK_IDS
    ("/kbs", {"tenant": "*/../"}),
    ("/kbs/docs", {"tenant": "*"}),  # a knowledge base is named within one tenant
    ("/kbs/docs/documents", {"tenant": "*"}),
    ("/documents/abc/chunks", {"limit": 0}),
    ("/documents/abc/chunks", {"limit": 501}),
    ("/documents/abc/chunks", {"offset": -5}),
    ("/documents/abc/chunks", {"tenant": "*"}),
])
async def test_bad_parameters_are_422(admin_client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> None:
    await admin_client.post(f"{API}/kbs", json={"name": "docs"})
    response = await admin_client.get(API + path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request" and response.json()["error"]["message"]


async def test_an_admin_searches_another_tenants_knowledge_base_by_naming_it(make_client: ClientFactory, core: Core,
                                                                             vectors: Any) -> None:
    alice, admin = await make_client("alice"), await make_client("ops", admin=True)
    await _ingested(alice, core, vectors, "guide", "guide.md", GUIDE)
    body = {"query": "lighthouse keeper storms", "top_k": 3}
    assert (await admin.post(f"{API}/kbs/guide/search", json=body)).status_code == 404
    hits = (await admin.post(f"{API}/kbs/guide/search", json=body, params={"tenant": "alice"})).json()["hits"]
    assert len(hits) == 3 and all(h["filename"] == "guide.md" for h in hits)
