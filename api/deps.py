"""Request-scoped access to the process's clients (built once in the app lifespan) and to the caller.

Auth: an API key in `Authorization: Bearer <key>`, or in the `docvec_key` cookie (the dashboard). A key
belongs to one tenant; every tenant route is scoped by it. Admin keys act as their own tenant on tenant
routes unless they name another with `tenant=T` (the lists `GET /tasks` and `GET /kbs` also take `tenant=*`:
every tenant's), and may also use the fleet-level (admin) routes. Another key passing `tenant=` gets 403.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from common.apikeys import TENANT_RE, ApiKeyStore
from common.dependencies import Dependency, DependencyBoard, Probe
from common.embedding.batcher import EmbedBatcher
from common.errors import Forbidden, InvalidParameter, Unauthorized
from common.runtime import Core
from vectordb.chunkstore import ChunkStore

DEFAULT_TENANT = "default"
ALL_TENANTS = "*"
KEY_COOKIE = "docvec_key"
KEY_RECORD_STATE = "api_key_record"  # (raw key, record) `limits.BodyGate` authenticated, for `caller`
MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>' (create one with `docvec keys create`)"
INVALID_KEY = "invalid or revoked API key"

_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="an API key: `Authorization: Bearer <key>`")
_cookie = APIKeyCookie(name=KEY_COOKIE, auto_error=False, scheme_name="cookie",
                       description="the same API key in the `docvec_key` cookie (used by the dashboard)")


@dataclass(frozen=True, slots=True)
class AppServices:
    core: Core
    chunks: ChunkStore
    queries: EmbedBatcher  # search queries of concurrent requests embedded together
    apikeys: ApiKeyStore
    probes: Mapping[Dependency, Probe]
    readiness: DependencyBoard  # outages `/readyz` has seen, with the time each began


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the tenant of their key, whether the key is an admin key, and its id."""

    tenant: str
    is_admin: bool
    key_id: str


# The dependencies below are coroutines though they never await: FastAPI runs a plain `def` dependency
# on a thread-pool thread, one hop (and two GIL hand-offs) per request for an attribute read.


async def services(request: Request) -> AppServices:
    return request.app.state.services


Services = Annotated[AppServices, Depends(services)]


async def caller(
    request: Request,
    svc: Services,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Caller:
    """Authenticate the request's API key (header first, then cookie); 401 when missing or invalid."""
    raw = bearer.credentials.strip() if bearer is not None else (cookie or "").strip()
    if not raw:
        raise Unauthorized(MISSING_KEY)
    checked = getattr(request.state, KEY_RECORD_STATE, None)  # the body gate's, before the body was read
    record = checked[1] if checked is not None and checked[0] == raw else await asyncio.to_thread(
        svc.apikeys.authenticate, raw)
    if record is None:
        raise Unauthorized(INVALID_KEY)
    found = Caller(tenant=record.tenant, is_admin=record.is_admin, key_id=record.id)
    request.state.caller = found
    return found


CallerDep = Annotated[Caller, Depends(caller)]


def presented_key(request: Request) -> str:
    """The API key a request presents, as `caller` reads it: `Authorization: Bearer <key>`, else the
    `docvec_key` cookie (for code that runs outside the route's dependencies: the dashboard page, the
    body gate)."""
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    return bearer.strip() if scheme.lower() == "bearer" else (request.cookies.get(KEY_COOKIE) or "").strip()


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose objects a request reaches: `tenant`'s, or every tenant's when `tenant` is None (an admin key
    that asked for `tenant=*`). Without `tenant=`, every key reaches its own tenant's objects only."""

    tenant: str | None
    caller: Caller

    def allows(self, owner: str) -> bool:
        """Whether an object of tenant `owner` is within reach (others' objects are 404, as if absent)."""
        return self.tenant is None or self.tenant == owner

    def one_tenant(self) -> str:
        """The single tenant of a request on one tenant's objects (every route but the lists)."""
        if self.tenant is None:
            raise InvalidParameter("tenant=* spans every tenant, for lists only; this route acts within one tenant: "
                                   "pass tenant=NAME")
        return self.tenant


TENANT_PARAM = Query(
    pattern=f"^(\\*|{TENANT_RE.pattern})$",
    description="admin keys only (403 otherwise): act on this tenant's objects; `*`: every tenant's (lists only). "
                "Default: the key's own tenant",
)


async def scope(who: CallerDep, tenant: Annotated[str | None, TENANT_PARAM] = None) -> Scope:
    """The request's scope: the caller's tenant, or for an admin key the tenant (or `*`) it names."""
    if tenant is None:
        return Scope(who.tenant, who)
    if not who.is_admin:
        raise Forbidden("the tenant parameter needs an admin API key; other keys reach their own tenant only")
    return Scope(None if tenant == ALL_TENANTS else tenant, who)


TenantScope = Annotated[Scope, Depends(scope)]


async def tenant(scope: TenantScope) -> str:
    """The tenant every tenant route is scoped by: the caller's, or for an admin key the one it names
    with `tenant=` (an admin acts on another tenant's objects only when it says so)."""
    return scope.one_tenant()


async def require_admin(who: CallerDep) -> Caller:
    """The caller, who must hold an admin key (403 otherwise)."""
    if not who.is_admin:
        raise Forbidden("this route needs an admin API key (`docvec keys create --tenant T --admin`)")
    return who


Tenant = Annotated[str, Depends(tenant)]
Admin = Annotated[Caller, Depends(require_admin)]

