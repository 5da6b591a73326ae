"""Requests are refused before their body is read (`api.limits.BodyGate`): no key means 401 while the
body is still unsent, a declared size over the cap means 413 at once, a body that streams past its cap
is cut off with 413 — and nothing of a refused upload is left in the server's temp directory. Spoken
over a raw socket to a real uvicorn, so the client controls how much of the body it ever sends."""

from __future__ import annotations

import asyncio
import os
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api.limits import PART_HEADER_BYTES, PartSizes
from common.settings import Settings
from tests.api.live import LiveApi

ANSWER_TIMEOUT_S = 10.0
CAP = 256 * 1024


@pytest.fixture
def gated_api(settings: Settings, tmp_path: Path) -> Iterator[LiveApi]:
    settings.api.max_json_bytes = CAP
    settings.api.max_request_bytes = 4 * CAP
    server = LiveApi(settings, tmp_path / "live-vectors").start()
    try:
        yield server
    finally:
        server.stop()


async def _send(api: LiveApi, head: str, body: bytes, *, then: bytes = b"") -> str:
    """Send `head` and `body`, then as much of `then` as the server takes (it may close first), and
    read the status line; with `then` empty, the status is read while the rest of a declared body is
    still unsent."""
    url = urlsplit(api.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        # Read while writing: a server that refuses mid-body answers, then closes (the rest is reset).
        answer = asyncio.create_task(asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT_S))
        try:
            for start in range(0, len(then), 16 * 1024):
                if answer.done():
                    break
                writer.write(then[start:start + 16 * 1024])
                await writer.drain()
                await asyncio.sleep(0.005)
        except (ConnectionError, OSError):
            pass  # refused mid-body: the answer was sent before the close
        return (await answer).decode().strip()
    finally:
        writer.close()


def _head(path: str, length: int, *, key: str | None = None, content_type: str = "application/json",
          chunked: bool = False) -> str:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    size = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n"
    return f"POST {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: {content_type}\r\n{size}\r\n"


async def _create_kb(api: LiveApi, key: str, name: str = "docs") -> None:
    async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": f"Bearer {key}"}) as client:
        (await client.post("/api/v1/kbs", json={"name": name})).raise_for_status()


def _temp_entries() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


async def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(gated_api: LiveApi) -> None:
    declared = 80 * 1024 * 1024
    head = _head("/api/v1/kbs/docs/documents", declared, content_type="multipart/form-data; boundary=x")
    status = await _send(gated_api, head, b"--x\r\n")  # 80 MiB declared, 5 bytes sent: answered anyway
    assert status.startswith("HTTP/1.1 401")
    wrong = _head("/api/v1/kbs/docs/search", declared, key="dvk_not-a-key")
    assert (await _send(gated_api, wrong, b"{")).startswith("HTTP/1.1 401")


async def test_a_declared_size_over_the_cap_is_refused_at_once(gated_api: LiveApi) -> None:
    key = gated_api.issue_key("acme").secret
    json_head = _head("/api/v1/kbs/docs/search", 150 * 1024 * 1024, key=key)
    assert (await _send(gated_api, json_head, b'{"query": "')).startswith("HTTP/1.1 413")
    upload = _head("/api/v1/kbs/docs/documents", 120 * 1024 * 1024, key=key,
                   content_type="multipart/form-data; boundary=x")
    assert (await _send(gated_api, upload, b"--x\r\n")).startswith("HTTP/1.1 413")


async def test_a_body_streaming_past_its_cap_is_cut_off_and_leaves_no_temp_file(gated_api: LiveApi) -> None:
    key = gated_api.issue_key("acme").secret
    before = _temp_entries()
    part = (b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\n")
    payload = part + b"a" * (8 * CAP)  # twice the request cap, sent as one chunk of a chunked body
    chunk = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    head = _head("/api/v1/kbs/docs/documents", 0, key=key, content_type="multipart/form-data; boundary=x",
                 chunked=True)
    await _create_kb(gated_api, key)
    status = await _send(gated_api, head, b"", then=chunk)
    assert status.startswith("HTTP/1.1 413"), status
    await asyncio.sleep(0.5)
    assert _temp_entries() - before == set(), "a refused upload left a spooled file behind"

    json_head = _head("/api/v1/kbs/docs/search", 0, key=key, chunked=True)
    big = b'{"query": "' + b"q" * (2 * CAP) + b'"}'
    body = f"{len(big):x}\r\n".encode() + big + b"\r\n0\r\n\r\n"
    status = await _send(gated_api, json_head, b"", then=body)
    assert status.startswith("HTTP/1.1 413"), status


def _multipart(files: list[tuple[str, bytes]], boundary: bytes = b"b0undary") -> bytes:
    out = b""
    for name, data in files:
        out += (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" +
                name.encode() + b"\"\r\nContent-Type: text/plain\r\n\r\n" + data + b"\r\n")
    return out + b"--" + boundary + b"--\r\n"


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_part_sizes_are_counted_across_chunk_edges(chunk: int) -> None:
    body = _multipart([("a.txt", b"x" * 1000), ("b.txt", b"y" * 3000), ("c.txt", b"z" * 10)])

    def verdict(max_part: int, max_parts: int) -> str | None:
        sizes = PartSizes(b"b0undary", max_part, max_parts)
        for start in range(0, len(body), chunk):
            why = sizes.feed(body[start:start + chunk])
            if why is not None:
                return why
        return None

    assert verdict(3200, 3) is None
    assert "over the limit" in (verdict(2500, 3) or "")  # b.txt's 3,000 bytes (plus its headers)
    assert "more than 2 parts" in (verdict(3200, 2) or "")


async def test_an_upload_is_cut_off_at_its_first_oversized_file_or_one_part_too_many(
        settings: Settings, tmp_path: Path) -> None:
    settings.limits.max_upload_bytes = 32 * 1024
    settings.api.max_upload_parts = 3
    api = LiveApi(settings, tmp_path / "live-vectors").start()
    try:
        key = api.issue_key("acme").secret
        await _create_kb(api, key)
        before = _temp_entries()
        for files, words in [([("ok.txt", b"a" * 1000), ("big.txt", b"b" * (PART_HEADER_BYTES + 40 * 1024))],
                              "max_upload_bytes"),
                             ([(f"f{i}.txt", b"c" * 10) for i in range(5)], "api.max_upload_parts")]:
            body = _multipart(files)
            head = _head("/api/v1/kbs/docs/documents", len(body), key=key,
                         content_type="multipart/form-data; boundary=b0undary")
            url = urlsplit(api.url)
            reader, writer = await asyncio.open_connection(url.hostname, url.port)
            try:
                writer.write(head.encode() + body)
                await writer.drain()
                answer = b""
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    while b"}}" not in answer and (more := await reader.read(4096)):
                        answer += more
            finally:
                writer.close()
            assert answer.startswith(b"HTTP/1.1 413") and words.encode() in answer, answer[:300]
        assert _temp_entries() - before == set()
    finally:
        api.stop()


FILE_BYTES = 8 * 1024 * 1024


async def _post_raw(api: LiveApi, head: str, body: bytes) -> bytes:
    """Send a whole request in 64 KiB writes while reading the answer (a refusal arrives mid-body, before
    the server closes); the answer: status line, headers and JSON body."""
    url = urlsplit(api.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)

    async def read_answer() -> bytes:
        answer = b""
        while b"}" not in answer.partition(b"\r\n\r\n")[2] and (more := await reader.read(4096)):
            answer += more
        return answer

    try:
        answer = asyncio.create_task(asyncio.wait_for(read_answer(), ANSWER_TIMEOUT_S * 3))
        view = memoryview(body)  # no copy of the body: the test traces what the server allocates
        writer.write(head.encode())
        try:
            for start in range(0, len(view), 64 * 1024):
                if answer.done():
                    break
                writer.write(view[start:start + 64 * 1024])
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # refused mid-body: the answer was sent before the close
        return await answer
    finally:
        writer.close()


def _traced_peak_bytes(since: int) -> int:
    return tracemalloc.get_traced_memory()[1] - since


async def test_an_upload_is_held_one_file_at_a_time_and_a_refused_one_leaves_nothing(
        settings: Settings, tmp_path: Path) -> None:
    """Four 8 MiB files in one request: the server never holds much more than one of them (the peak of
    the memory Python allocates while it receives them, traced across the process, stays under 1.6 files:
    measured 1.28; a file kept while the next streamed in made it 2.27, holding all four 5). A request
    whose last file is over the per-file cap is refused with 413, leaving no temp file and none of its
    bytes held, and the files it had already stored are released as garbage at once."""
    settings.limits.max_upload_bytes = FILE_BYTES + 1024
    api = LiveApi(settings, tmp_path / "live-vectors").start()
    try:
        key = api.issue_key("acme").secret
        await _create_kb(api, key)
        files = [(f"f{i}.txt", bytes([97 + i]) * FILE_BYTES) for i in range(4)]
        body = _multipart(files)
        head = _head("/api/v1/kbs/docs/documents", len(body), key=key,
                     content_type="multipart/form-data; boundary=b0undary")
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            answer = await _post_raw(api, head, body)
            accepted_peak = _traced_peak_bytes(baseline)

            before = _temp_entries()
            big = ("big.txt", b"z" * (FILE_BYTES + 64 * 1024))  # past the body gate's per-file cap too
            refused = _multipart([*files[:3], big])
            head = _head("/api/v1/kbs/docs/documents", len(refused), key=key,
                         content_type="multipart/form-data; boundary=b0undary")
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            refusal = await _post_raw(api, head, refused)
            refused_peak = _traced_peak_bytes(baseline)
            await asyncio.sleep(0.2)  # the server finishes its side of the refused request
            refused_kept = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
        assert answer.count(b'"outcome":"added"') == 4
        assert accepted_peak < 1.6 * FILE_BYTES, f"{accepted_peak:,} bytes allocated at the peak of the upload"
        assert refusal.startswith(b"HTTP/1.1 413") and b"max_upload_bytes" in refusal, refusal[:300]
        assert refused_peak < 1.6 * FILE_BYTES, f"{refused_peak:,} bytes allocated at the peak of the refusal"
        assert refused_kept < FILE_BYTES / 4, f"{refused_kept:,} bytes still held after the refusal"
        assert _temp_entries() - before == set()
        released = [g for g in api.repo.garbage.due(100) if g.reason == "upload refused"]
        assert len(released) == 3  # the three files stored before the oversized one: due for removal now
    finally:
        api.stop()
