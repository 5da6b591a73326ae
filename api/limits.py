"""The gate every API request with a body passes before the body is read.

FastAPI reads (and spools to disk) a whole multipart form, or a whole JSON body, before any dependency
runs: a 120 MiB upload was received in full before its 401 or 413. `BodyGate` answers first: a request
to the API with a body and no valid key gets 401 before a byte of it is read; one whose declared
`Content-Length` is over its cap gets 413 at once; and one that streams past its cap (chunked, or a
lying header) is cut off there with 413 — what was read so far is dropped, nothing was spooled beyond
the cap. Caps: `api.max_json_bytes` for JSON and other bodies, `api.max_request_bytes` for multipart
uploads (the per-file cap, `limits.max_upload_bytes`, is the upload route's).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import KEY_COOKIE, KEY_RECORD_STATE
from common.settings import ApiSettings

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyGate:
    """ASGI middleware for the routes under `prefix` (see the module doc)."""

    def __init__(self, app: ASGIApp, *, settings: ApiSettings, prefix: str) -> None:
        self.app = app
        self._settings = settings
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or not scope["path"].startswith(self._prefix):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = await self._authenticate(scope, headers)
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
        await self._within(scope, receive, send, cap, what)

    async def _authenticate(self, scope: Scope, headers: Headers) -> str | None:
        """Why the request's key is refused, or None (then the key's record is left in the scope)."""
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        raw = bearer.strip() if scheme.lower() == "bearer" else _cookie(headers)
        if not raw:
            return "missing API key: send 'Authorization: Bearer <key>' (create one with `docvec keys create`)"
        services = scope["app"].state.services
        record = await asyncio.to_thread(services.apikeys.authenticate, raw)
        if record is None:
            return "invalid or revoked API key"
        scope.setdefault("state", {})[KEY_RECORD_STATE] = (raw, record)
        return None

    async def _within(self, scope: Scope, receive: Receive, send: Send, cap: int, what: str) -> None:
        """Run the app, cutting the body off past `cap` bytes: the app's own answer to the broken body is
        replaced by a 413."""
        received = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading here
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over:
                if not started:
                    started = True
                    await _answer(send, 413, "limit_exceeded",
                                  f"the {what} is over the limit of {cap:,} bytes; send less per request")
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
            if not started:  # the app gave up on the cut-off body with an error: the answer is still 413
                await guarded({"type": "http.response.start"})


def _cookie(headers: Headers) -> str:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == KEY_COOKIE:
            return value.strip()
    return ""


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    """An API error response (`api.errors` shape), sent without reading the request body."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
