"""Uploads without a `source_id` (issue 28, item 5): the key is the sanitized relative path the client sent,
a nameless part gets a key derived from its bytes (never one shared with other nameless parts), and the
part's file name is read as browsers, curl and httpx encode it (percent-encoded `"`, CR, LF; `filename*=`).
Against the real app on a real redis-server."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from common.uploads import MAX_SOURCE_ID_CHARS

API = "/api/v1"
BOUNDARY = "docvecBoundary7MA4YWxk"


async def _upload(client: httpx.AsyncClient, *files: tuple[str | None, bytes]) -> list[dict[str, Any]]:
    response = await client.post(f"{API}/kbs/docs/documents", files=[("files", item) for item in files])
    assert response.status_code == 202, response.text
    return list(response.json()["documents"])


def _raw_part(disposition: bytes, content: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: " + disposition + b"\r\n"
            b"Content-Type: text/markdown\r\n\r\n" + content + b"\r\n")


async def _post_raw(client: httpx.AsyncClient, *parts: bytes) -> httpx.Response:
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return await client.post(f"{API}/kbs/docs/documents", content=body,
                             headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


async def test_files_of_the_same_name_in_different_folders_are_different_documents(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    first, second = await _upload(client, ("a/b/c.md", b"# One\n\nin a/b"), ("x/c.md", b"# Two\n\nin x"))
    assert (first["outcome"], first["source_id"], first["filename"]) == ("added", "a/b/c.md", "c.md")
    assert (second["outcome"], second["source_id"], second["filename"]) == ("added", "x/c.md", "c.md")
    assert first["document_id"] != second["document_id"]
    # The same path again is the same document: unchanged bytes are a no-op, new bytes an update.
    (again,) = await _upload(client, ("a/b/c.md", b"# One\n\nin a/b"))
    assert (again["outcome"], again["document_id"]) == ("unchanged", first["document_id"])
    (edited,) = await _upload(client, ("x/c.md", b"# Two\n\nedited"))
    assert (edited["outcome"], edited["document_id"]) == ("updated", second["document_id"])
    listed = (await client.get(f"{API}/kbs/docs/documents")).json()
    assert sorted(d["source_id"] for d in listed) == ["a/b/c.md", "x/c.md"]


async def test_the_path_is_normalized_into_a_relative_key(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    sent = ["../../etc/passwd", "/abs/./notes.md", "win\\dir\\report.md", "C:\\Users\\me\\plan.md",
            "a//b/../c.md", "tab\there.md"]
    submitted = await _upload(client, *[(name, name.encode()) for name in sent])
    assert [d["source_id"] for d in submitted] == ["etc/passwd", "abs/notes.md", "win/dir/report.md",
                                                   "Users/me/plan.md", "a/b/c.md", "tab_here.md"]
    assert [d["filename"] for d in submitted] == ["passwd", "notes.md", "report.md", "plan.md", "c.md", "tab_here.md"]
    assert {d["outcome"] for d in submitted} == {"added"}


async def test_nameless_parts_get_keys_of_their_own_content(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    contents = [b"# One\n\nfirst nameless", b"# Two\n\nsecond", b"# Three\n\nthird", b"# Four\n\nfourth",
                b"# Five\n\nfifth"]
    names: list[str | None] = ["", ".", "..", "/", None]  # None: a part with no filename= at all
    response = await _post_raw(client, *[
        _raw_part(b'form-data; name="files"' + (b"" if name is None else f'; filename="{name}"'.encode()), data)
        for name, data in zip(names, contents, strict=True)])
    assert response.status_code == 202, response.text
    submitted = response.json()["documents"]
    assert [d["outcome"] for d in submitted] == ["added"] * 5
    assert [d["source_id"] for d in submitted] == [f"upload-{hashlib.sha256(c).hexdigest()[:16]}" for c in contents]
    assert len({d["document_id"] for d in submitted}) == 5
    # The same bytes again, nameless or not: the same key, unchanged; new bytes: a new document.
    (same,) = await _upload(client, ("", contents[0]))
    assert (same["outcome"], same["document_id"]) == ("unchanged", submitted[0]["document_id"])
    (other,) = await _upload(client, ("..", b"# Six\n\nsixth"))
    assert other["outcome"] == "added"
    assert len((await client.get(f"{API}/kbs/docs/documents")).json()) == 6


async def test_percent_encoded_quotes_and_line_breaks_in_a_file_name(client: httpx.AsyncClient) -> None:
    """How browsers (HTML's multipart/form-data encoding) and curl >= 7.81 send `"`, CR and LF."""
    await client.post(f"{API}/kbs", json={"name": "docs"})
    response = await _post_raw(client, _raw_part(
        b'form-data; name="files"; filename="notes/two%0D%0Alines %22quoted%22.md"', b"# Q\n\nquoted"))
    assert response.status_code == 202, response.text
    (doc,) = response.json()["documents"]
    assert (doc["source_id"], doc["filename"]) == ('notes/two_lines "quoted".md', 'two_lines "quoted".md')
    stored = (await client.get(f"{API}/documents/{doc['document_id']}")).json()
    assert stored["filename"] == 'two_lines "quoted".md'


async def test_httpx_names_with_quotes_backslashes_and_line_breaks_come_back_whole(client: httpx.AsyncClient) -> None:
    """httpx percent-encodes `"` and control characters and doubles a backslash."""
    await client.post(f"{API}/kbs", json={"name": "docs"})
    (doc,) = await _upload(client, ('say "hi"\r\nnow.md', b"# Hi\n\nhello"))
    assert (doc["source_id"], doc["filename"]) == ('say "hi"_now.md', 'say "hi"_now.md')
    (slashed,) = await _upload(client, ("dir\\sub\\x.md", b"# X\n\nx"))
    assert (slashed["source_id"], slashed["filename"]) == ("dir/sub/x.md", "x.md")


async def test_backslash_escaped_quotes_and_rfc5987_names(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    response = await _post_raw(
        client,
        _raw_part(b'form-data; name="files"; filename="say \\"hi\\".md"', b"# A\n\nold curl"),
        _raw_part(b"form-data; name=\"files\"; filename=\"ete.md\"; filename*=UTF-8''%C3%A9t%C3%A9%20%E2%9C%93.md",
                  b"# B\n\nencoded"),
        _raw_part('form-data; name="files"; filename="résumé.md"'.encode(), b"# C\n\nutf-8 as is"),
    )
    assert response.status_code == 202, response.text
    assert [d["filename"] for d in response.json()["documents"]] == ['say "hi".md', "été ✓.md", "résumé.md"]


async def test_a_raw_line_break_in_a_file_name_is_refused_not_stored_with_a_quote(client: httpx.AsyncClient) -> None:
    """A raw CR LF ends the header line: what follows would be read as another header and the name would
    keep its opening quote. The part's name has no closing quote: a 400 saying how to send it, nothing stored."""
    await client.post(f"{API}/kbs", json={"name": "docs"})
    response = await _post_raw(
        client,
        _raw_part(b'form-data; name="files"; filename="fine.md"', b"# Fine\n\nfine"),
        _raw_part(b'form-data; name="files"; filename="evil\r\nX-Injected: yes.md"', b"# Evil\n\nevil"),
    )
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "closing quote" in message and "%0D%0A" in message
    assert (await client.get(f"{API}/kbs/docs/documents")).json() == []


async def test_a_path_too_long_for_a_key_keeps_its_end_and_stays_distinct(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    deep = "/".join(["folder"] * 100)
    first, second = await _upload(client, (f"{deep}/one/report.md", b"# 1\n\none"),
                                  (f"{deep}/two/report.md", b"# 2\n\ntwo"))
    for doc in (first, second):
        assert doc["outcome"] == "added" and len(doc["source_id"]) <= MAX_SOURCE_ID_CHARS
        assert doc["source_id"].endswith("/report.md") and doc["filename"] == "report.md"
    assert first["source_id"] != second["source_id"]
    (again,) = await _upload(client, (f"{deep}/one/report.md", b"# 1\n\none"))
    assert (again["outcome"], again["document_id"]) == ("unchanged", first["document_id"])
