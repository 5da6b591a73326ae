"""The API key store on SQLite, PostgreSQL and MariaDB (each test in a fresh schema/database)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from common.apikeys import ApiKeyStore
from common.db import Repository, open_database
from common.errors import InvalidRequest, NotFound
from tests.common.test_db import mysql_url, postgresql_url, sqlite_url  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def store(request: pytest.FixtureRequest) -> Iterator[ApiKeyStore]:
    database = open_database(request.getfixturevalue(f"{request.param}_url"))
    try:
        Repository(database)  # the key table lives beside the repository's tables
        yield ApiKeyStore(database)
    finally:
        database.close_all()


def test_create_authenticate_revoke(store: ApiKeyStore) -> None:
    issued = store.create("acme", name="ci")
    admin = store.create("ops", admin=True)
    found = store.authenticate(issued.secret)
    assert found == issued.record and found.tenant == "acme" and not found.is_admin and found.active
    assert store.authenticate(admin.secret).is_admin  # type: ignore[union-attr]
    assert store.authenticate(issued.secret + "x") is None
    assert store.authenticate("not-a-key") is None
    revoked = store.revoke(issued.record.id)
    assert revoked.revoked_at is not None
    assert store.authenticate(issued.secret) is None
    assert store.revoke(issued.record.id).revoked_at == revoked.revoked_at  # idempotent
    assert [k.id for k in store.list_keys()] == [admin.record.id]
    assert {k.id for k in store.list_keys(include_revoked=True)} == {issued.record.id, admin.record.id}
    assert [k.id for k in store.list_keys(tenant="acme", include_revoked=True)] == [issued.record.id]


def test_only_the_hash_and_a_prefix_are_stored(store: ApiKeyStore) -> None:
    issued = store.create("acme")
    database = store._db
    with database.connection_context():
        rows = list(database.execute_sql("SELECT * FROM api_key").fetchall())
    assert len(rows) == 1
    assert not any(issued.secret in str(value) for value in rows[0])
    assert hashlib.sha256(issued.secret.encode()).hexdigest() in rows[0]
    assert issued.record.prefix == issued.secret[:12]


def test_bad_input(store: ApiKeyStore) -> None:
    for tenant in ("", "a/b", "-x", "x" * 65):
        with pytest.raises(InvalidRequest):
            store.create(tenant)
    with pytest.raises(NotFound):
        store.revoke("missing")


def test_a_second_store_on_the_same_database_sees_the_keys(store: ApiKeyStore) -> None:
    issued = store.create("acme")
    assert ApiKeyStore(store._db).authenticate(issued.secret) == issued.record
