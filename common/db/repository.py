"""`Repository`: one database's stores, on one session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import peewee

from common.db.connection import Session
from common.db.documents import Documents
from common.db.embeddings import Embeddings
from common.db.garbage import GarbageStore
from common.db.kbs import KnowledgeBases
from common.db.ledger import WorkerLedger
from common.db.models import build_models, create_or_upgrade
from common.db.tasks import Tasks


class Repository:
    """Knowledge bases, documents, tasks, the worker ledger and garbage on one database. Every method of
    every store is synchronous and thread-safe (async callers use `asyncio.to_thread`), and raises
    `DependencyUnavailable` (database) when the database cannot be reached.

    - `kbs`: knowledge bases;          - `documents`: documents, their live parse versions;
    - `tasks`: task queries, cancel and retry;  - `ledger`: the worker's claims, progress, completions...;
    - `garbage`: what is to be removed from the stores;  - `embeddings`: stored chunk vectors, for reuse.
    """

    def __init__(self, database: peewee.Database) -> None:
        self.session = Session(database)
        models = build_models(database)
        with self.session.transaction():
            create_or_upgrade(database, models)
        self.garbage = GarbageStore(self.session, models)
        self.kbs = KnowledgeBases(self.session, models, garbage=self.garbage)
        self.documents = Documents(self.session, models, garbage=self.garbage)
        self.tasks = Tasks(self.session, models, garbage=self.garbage)
        self.ledger = WorkerLedger(self.session, models, garbage=self.garbage)
        self.embeddings = Embeddings(self.session, models)

    @property
    def database(self) -> peewee.Database:
        return self.session.db

    def ping(self) -> None:
        self.session.ping()

    def close(self) -> None:
        self.session.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run several calls in one transaction (the worker commits a round of writes at once)."""
        with self.session.transaction():
            yield
