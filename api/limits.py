"""The gate every API request with a body passes before the body is read.

FastAPI reads (and spools to disk) a whole multipart form, or a whole JSON body, before any dependency
runs: a 120 MiB upload was received in full before its 401 or 413. `BodyGate` answers first: a request
to the API with a body and no valid key gets 401 before a byte of it is read; one whose declared
`Content-Length` is over its cap gets 413 at once; and one that streams past its cap (chunked, or a
lying header) is cut off there with 413 — what was read so far is dropped, nothing was spooled beyond
the cap. Caps: `api.max_json_bytes` for JSON and other bodies, `api.max_request_bytes` for multipart
uploads; and within an upload, while it streams, each part (a file) within `limits.max_upload_bytes`
and at most `api.max_upload_parts` parts (files and form fields).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import INVALID_KEY, KEY_RECORD_STATE, MISSING_KEY, presented_key
from common.settings import Settings

log = logging.getLogger(__name__)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyGate:
    """ASGI middleware for the routes under `prefix` (see the module doc)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, prefix: str) -> None:
        self.app = app
        self._settings = settings.api
        self._max_part_bytes = settings.limits.max_upload_bytes + PART_HEADER_BYTES
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or not scope["path"].startswith(self._prefix):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = await self._authenticate(scope)
        if refusal is not None:
            await _answer(send, 401, "unauthorized", refusal)
            return
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        cap = self._settings.max_request_bytes if multipart else self._settings.max_json_bytes
        what = "upload request" if multipart else "request body"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            await _answer(send, 413, "limit_exceeded", f"the {what} is {int(declared):,} bytes, above the limit of "
                                                       f"{cap:,} bytes; send less per request")
            return
        parts = _multipart_boundary(headers.get("content-type", "")) if multipart else None
        sizes = None if parts is None else PartSizes(parts, self._max_part_bytes, self._settings.max_upload_parts)
        await self._within(scope, receive, send, cap, what, sizes)

    async def _authenticate(self, scope: Scope) -> str | None:
        """Why the request's key is refused, or None (then the key's record is left in the scope)."""
        raw = presented_key(Request(scope))
        if not raw:
            return MISSING_KEY
        services = scope["app"].state.services
        record = await asyncio.to_thread(services.apikeys.authenticate, raw)
        if record is None:
            return INVALID_KEY
        scope.setdefault("state", {})[KEY_RECORD_STATE] = (raw, record)
        return None

    async def _within(self, scope: Scope, receive: Receive, send: Send, cap: int, what: str,
                      sizes: PartSizes | None) -> None:
        """Run the app, cutting the body off past `cap` bytes (or a part past its own caps): the app's
        own answer to the broken body is replaced by a 413."""
        received = 0
        over: str | None = None
        started = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                over = (f"the {what} is over the limit of {cap:,} bytes; send less per request"
                        if received > cap else sizes.feed(chunk) if sizes is not None else None)
                if over is not None:
                    return {"type": "http.disconnect"}  # the app stops reading here
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over is not None:
                if not started:
                    started = True
                    await _answer(send, 413, "limit_exceeded", over)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception as exc:
            if over is None:
                raise
            # The app gave up on the cut-off body with an error: the answer is the 413 all the same.
            log.debug("request body cut off (%s); the app stopped with %r", over, exc)
            if not started:
                await guarded({"type": "http.response.start"})


PART_HEADER_BYTES = 16 * 1024  # a part's own headers, counted with its content


class PartSizes:
    """The size of each part of a multipart body and how many there are, counted as it streams in (a
    boundary split across two chunks is still found). `feed` says why to refuse the body, or None."""

    def __init__(self, boundary: bytes, max_part_bytes: int, max_parts: int) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._tail = b"\r\n"  # the body opens with "--boundary": as if a line ended before it
        self._max_part_bytes, self._max_parts = max_part_bytes, max_parts
        self._delimiters = 0
        self._current = 0

    def feed(self, data: bytes) -> str | None:
        buffer = self._tail + data
        start = 0
        while (found := buffer.find(self._delimiter, start)) != -1:
            self._current += found - start
            if self._current > self._max_part_bytes:
                break
            self._delimiters += 1
            self._current = 0
            start = found + len(self._delimiter)
        else:
            keep = len(self._delimiter) - 1  # a delimiter may begin in the last bytes: look again next time
            rest = buffer[start:]
            self._tail = rest[-keep:] if len(rest) > keep else rest
            self._current += len(rest) - len(self._tail)
        if self._current > self._max_part_bytes:
            limit = self._max_part_bytes - PART_HEADER_BYTES
            return f"a file of the upload is over the limit of {limit:,} bytes (limits.max_upload_bytes)"
        if self._delimiters > self._max_parts + 1:  # the last delimiter closes the body, it opens no part
            return f"the upload has more than {self._max_parts} parts (files and fields; api.max_upload_parts)"
        return None


def _multipart_boundary(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"').encode("latin-1")
    return None


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    """An API error response (`api.errors` shape), sent without reading the request body."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
