"""Opening the database (SQLite by default, PostgreSQL or MySQL/MariaDB by URL) and one `Session` on it.

`Session` is what every store shares: `read()` (a pooled connection, no transaction) and `transaction()`
(one transaction; inside another it joins it). The driver losing its server is the database being
unavailable: both raise `DependencyUnavailable` (database) then.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

from common.dependencies import Dependency
from common.errors import DependencyUnavailable
from common.urls import redact_url

SQLITE_BUSY_TIMEOUT_MS = 10_000
POOL_MAX_CONNECTIONS = 32
POOL_STALE_TIMEOUT_S = 300
POOL_WAIT_TIMEOUT_S = 30


def open_database(url: str) -> peewee.Database:
    """Open a pooled peewee database for `sqlite:///path.db`, `postgresql://...` or `mysql://...`.

    SQLite: `sqlite:////abs/path.db` (or `sqlite:///rel/path.db`, relative to the working directory);
    the parent directory is created; WAL mode, foreign keys on, a busy timeout, and write transactions
    take the lock up front (`BEGIN IMMEDIATE`) so read-then-write transactions never deadlock.
    PostgreSQL / MySQL: `scheme://user:password@host:port/dbname?param=value`; query parameters are
    passed to the driver (e.g. `?options=-csearch_path%3Dmyschema` for PostgreSQL).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        return _open_sqlite(url)
    params: dict[str, Any] = dict(parse_qsl(parts.query))
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ValueError(f"database URL {redact_url(url)} names no database")
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    if parts.hostname:
        params["host"] = parts.hostname
    if parts.port:
        params["port"] = parts.port
    pool = {
        "max_connections": POOL_MAX_CONNECTIONS,
        "stale_timeout": POOL_STALE_TIMEOUT_S,
        "timeout": POOL_WAIT_TIMEOUT_S,
    }
    if scheme in ("postgres", "postgresql"):
        return PooledPostgresqlDatabase(dbname, **pool, **params)
    if scheme in ("mysql", "mariadb"):
        from pymysql.constants import CLIENT

        params.setdefault("charset", "utf8mb4")
        # Report matched rows, not changed rows, so a fenced UPDATE that writes equal values still counts.
        params["client_flag"] = CLIENT.FOUND_ROWS
        return PooledMySQLDatabase(dbname, **pool, **params)
    raise ValueError(f"unsupported database URL scheme {scheme!r} (expected sqlite, postgresql or mysql)")


def _open_sqlite(url: str) -> peewee.Database:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"SQLite URL must look like sqlite:////abs/path.db, got {url!r}")
    raw_path = url[len(prefix) :].split("?", 1)[0]
    if not raw_path or raw_path == ":memory:":
        raise ValueError(
            "in-memory SQLite is not supported: each pooled connection would see its own database"
        )
    path = Path(unquote(raw_path)).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return PooledSqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
            "synchronous": "normal",
        },
        lock_type="IMMEDIATE",
        check_same_thread=False,
        max_connections=POOL_MAX_CONNECTIONS,
        stale_timeout=POOL_STALE_TIMEOUT_S,
        timeout=POOL_WAIT_TIMEOUT_S,
    )



class Session:
    """Connections and transactions on one database, shared by the stores of a `Repository`."""

    def __init__(self, database: peewee.Database) -> None:
        self.db = database

    @contextmanager
    def read(self) -> Iterator[None]:
        """A pooled connection without a transaction: reads never take SQLite's write lock."""
        with _database_unavailable(), self.db.connection_context():
            yield

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction on a (pooled) connection, returned to the pool afterwards. Inside another
        one it simply joins it (no savepoint: nothing here recovers from an error inside a transaction)."""
        if self.db.in_transaction():
            yield
            return
        with _database_unavailable(), self.db:
            yield

    def ping(self) -> None:
        """A round trip to the database (health checks); DependencyUnavailable when it does not answer."""
        with self.read():
            self.db.execute_sql("SELECT 1")

    def close(self) -> None:
        """Close every pooled connection (call once, at shutdown)."""
        close_all = getattr(self.db, "close_all", None)
        if close_all is not None:
            close_all()
        elif not self.db.is_closed():
            self.db.close()


@contextmanager
def _database_unavailable() -> Iterator[None]:
    """The driver losing its server (connection refused or dropped, a restart, "database is locked" past
    the busy timeout) is the database being unavailable, not the caller's fault."""
    try:
        yield
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise DependencyUnavailable(Dependency.DATABASE, f"database unavailable: {exc}") from exc
