"""API keys: one tenant each, optionally admin, stored hashed at rest.

A key is `dvk_` + 43 URL-safe characters (256 random bits). Only its SHA-256 and a short, non-secret
prefix (for display in `docvec keys list`) are stored; the raw key is shown once, at creation. Lookups
go by hash, so no key comparison happens in Python at all, and a stolen database yields no usable key
(the keys are high-entropy, so an unsalted fast hash is enough: there is nothing to brute-force).

`ApiKeyStore(database)` builds its own model class bound to `database`, like `common.db.Repository`
(no shared proxy); its methods are synchronous, async callers wrap them in `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import peewee

from common.errors import InvalidRequest, NotFound

KEY_SCHEME = "dvk_"
KEY_RANDOM_BYTES = 32
DISPLAY_PREFIX_CHARS = 12
TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_NAME_CHARS = 128


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key, without its secret: `prefix` is its first characters, safe to display."""

    id: str
    tenant: str
    is_admin: bool
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: `secret` is the raw key, available only now."""

    record: ApiKeyRecord
    secret: str


def generate_key() -> str:
    return KEY_SCHEME + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(raw_key: str) -> str:
    """The stored form of a key (hex SHA-256)."""
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.fullmatch(tenant or ""):
        raise InvalidRequest(
            f"tenant {tenant!r} is invalid: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return tenant


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def _build_model(database: peewee.Database) -> Any:
    """A model class bound to `database` (a fresh class per database: no shared proxy)."""

    class ApiKey(peewee.Model):
        id = peewee.CharField(max_length=32, primary_key=True)
        key_hash = peewee.CharField(max_length=64, unique=True)
        prefix = peewee.CharField(max_length=DISPLAY_PREFIX_CHARS)
        tenant = peewee.CharField(max_length=64, index=True)
        is_admin = peewee.BooleanField(default=False)
        name = peewee.CharField(max_length=MAX_NAME_CHARS, default="")
        created_at = peewee.DoubleField()
        revoked_at = peewee.DoubleField(null=True)

        class Meta:
            table_name = "api_key"

    ApiKey._meta.set_database(database)
    return ApiKey


class ApiKeyStore:
    """API keys on one database. All methods are synchronous and thread-safe."""

    def __init__(self, database: peewee.Database) -> None:
        self._db = database
        self._model = _build_model(database)
        with self._db:
            database.create_tables([self._model], safe=True)

    @contextmanager
    def _read(self) -> Iterator[None]:
        with self._db.connection_context():
            yield

    def _record(self, row: Any) -> ApiKeyRecord:
        return ApiKeyRecord(
            id=row.id,
            tenant=row.tenant,
            is_admin=bool(row.is_admin),
            name=row.name,
            prefix=row.prefix,
            created_at=_dt(row.created_at),  # type: ignore[arg-type]
            revoked_at=_dt(row.revoked_at),
        )

    def create(self, tenant: str, *, admin: bool = False, name: str = "") -> IssuedKey:
        """Create a key for `tenant`; the returned `secret` is the only copy of the raw key."""
        check_tenant(tenant)
        if len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"key name is longer than {MAX_NAME_CHARS} characters")
        secret = generate_key()
        with self._db:
            row = self._model.create(
                id=uuid.uuid4().hex, key_hash=hash_key(secret), prefix=secret[:DISPLAY_PREFIX_CHARS],
                tenant=tenant, is_admin=admin, name=name, created_at=time.time(), revoked_at=None,
            )
        return IssuedKey(record=self._record(row), secret=secret)

    def authenticate(self, raw_key: str) -> ApiKeyRecord | None:
        """The active key whose hash matches `raw_key`, or None (unknown or revoked)."""
        if not raw_key.startswith(KEY_SCHEME):
            return None
        m = self._model
        with self._read():
            row = m.get_or_none((m.key_hash == hash_key(raw_key)) & m.revoked_at.is_null())
        return None if row is None else self._record(row)

    def get(self, key_id: str) -> ApiKeyRecord:
        with self._read():
            row = self._model.get_or_none(self._model.id == key_id)
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        return self._record(row)

    def list_keys(self, *, tenant: str | None = None, include_revoked: bool = False) -> list[ApiKeyRecord]:
        """Keys, oldest first, optionally of one tenant."""
        m = self._model
        query = m.select()
        if tenant is not None:
            query = query.where(m.tenant == tenant)
        if not include_revoked:
            query = query.where(m.revoked_at.is_null())
        with self._read():
            rows = list(query.order_by(m.created_at, m.id))
        return [self._record(r) for r in rows]

    def revoke(self, key_id: str) -> ApiKeyRecord:
        """Revoke a key at once (idempotent); `NotFound` if no key has this id."""
        m = self._model
        with self._db:
            m.update(revoked_at=time.time()).where((m.id == key_id) & m.revoked_at.is_null()).execute()
        return self.get(key_id)
