"""`GET /dashboard` (admin): the operator page, plus its sign-in form and static assets.

The page itself is static HTML + CSS + vanilla JS (`api/static/`, no CDN, no build step) that polls
`/api/v1/fleet` and `/api/v1/tasks`. It authenticates with `Authorization: Bearer <key>` like every
route, or with the API key kept in the `docvec_key` cookie (HttpOnly, SameSite=Strict: page scripts
cannot read it and other sites cannot send it; Secure over TLS, also behind a proxy listed in
`api.trusted_proxies`), which the sign-in form sets. Every response carries a Content-Security-Policy
(own files only, no frames), X-Frame-Options and Referrer-Policy. Without a valid admin key the
route answers with HTML (a sign-in form or a 403 page) rather than JSON, since a person is reading it.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from api.deps import KEY_COOKIE, Services, presented_key
from api.routes import fleet
from common.apikeys import ApiKeyRecord
from common.errors import NotFound

router = APIRouter(tags=["dashboard"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The only files served from STATIC_DIR, with their media types (no directory listing, no traversal).
ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
# Every dashboard response: its own files only (no inline script or style, no other origin), never in a
# frame, no referrer sent elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
NO_STORE = {"Cache-Control": "no-store", **SECURITY_HEADERS}
MAX_KEY_CHARS = 256


def install_operator_routes(app: FastAPI, *, api_prefix: str) -> None:
    """Add the operator routes: `GET {api_prefix}/fleet`, `/dashboard` and its sign-in and assets."""
    app.include_router(fleet.router, prefix=api_prefix)
    app.include_router(router)


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, svc: Services) -> Response:
    raw = presented_key(request)  # `Authorization: Bearer`, as on every other route, else the sign-in cookie
    if not raw:
        return _sign_in_page(status_code=401)
    record = await _authenticate(svc, raw)
    if record is None:
        page = _sign_in_page("The saved API key is invalid or was revoked. Sign in with an admin key.", 401)
        page.delete_cookie(KEY_COOKIE, path="/")
        return page
    if not record.is_admin:
        return _forbidden_page(record)
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html; charset=utf-8", headers=NO_STORE)


@router.post("/dashboard/login", response_class=HTMLResponse)
async def sign_in(request: Request, svc: Services, key: Annotated[str, Form()] = "") -> Response:
    raw = key.strip()
    if not raw or len(raw) > MAX_KEY_CHARS:
        return _sign_in_page("Enter an API key (it starts with dvk_).", 401)
    if await _authenticate(svc, raw) is None:
        return _sign_in_page("That API key is invalid or was revoked. Check it and try again.", 401)
    redirect = RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    redirect.set_cookie(KEY_COOKIE, raw, path="/", httponly=True, samesite="strict",
                        secure=_served_over_https(request, svc.core.settings.api.trusted_proxies))
    return redirect


@router.post("/dashboard/logout")
async def sign_out() -> Response:
    redirect = RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    redirect.delete_cookie(KEY_COOKIE, path="/")
    return redirect


@router.get("/dashboard/static/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard asset named {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type,
                        headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})


def _served_over_https(request: Request, trusted_proxies: list[str]) -> bool:
    """Whether the browser reached us over TLS: directly, or through a trusted proxy that says so."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client is not None else ""
    forwarded = (request.headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
    return forwarded == "https" and _is_trusted(peer, trusted_proxies)


def _is_trusted(peer: str, trusted_proxies: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in trusted_proxies)


async def _authenticate(svc: Services, raw: str) -> ApiKeyRecord | None:
    return await asyncio.to_thread(svc.apikeys.authenticate, raw)


def _page(title: str, body: str, status_code: int) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} · docvec</title>"
        "<link rel='stylesheet' href='/dashboard/static/dashboard.css'></head>"
        f"<body class='gate'><main class='gate-card'>{body}</main></body></html>",
        status_code=status_code,
        headers=NO_STORE,
    )


def _sign_in_page(message: str = "", status_code: int = 200) -> HTMLResponse:
    error = ""
    if message:
        error = f"<p class='gate-error' role='alert' data-testid='signin-error'>{html.escape(message)}</p>"
    return _page("Sign in", (
        "<h1>docvec operator dashboard</h1>"
        "<p>Sign in with an <strong>admin</strong> API key "
        "(create one with <code>docvec keys create --tenant T --admin</code>; "
        "<code>docvec up</code> prints one).</p>"
        f"{error}"
        "<form method='post' action='/dashboard/login' id='signin-form'>"
        "<label for='signin-key'>Admin API key</label>"
        "<input id='signin-key' name='key' type='password' autocomplete='current-password' required "
        f"maxlength='{MAX_KEY_CHARS}' placeholder='dvk_…' autofocus>"
        "<button type='submit' id='signin-submit'>Sign in</button>"
        "</form>"
    ), status_code)


def _forbidden_page(record: ApiKeyRecord) -> HTMLResponse:
    return _page("Forbidden", (
        "<h1 data-testid='forbidden-title'>403 — admin key required</h1>"
        f"<p>You are signed in with a key of tenant <code>{html.escape(record.tenant)}</code> "
        f"(<code>{html.escape(record.prefix)}…</code>), which is not an admin key. The dashboard shows the "
        "whole fleet, so it needs a key created with <code>--admin</code>.</p>"
        "<form method='post' action='/dashboard/logout'>"
        "<button type='submit' id='signout-submit'>Sign in with another key</button></form>"
    ), 403)
