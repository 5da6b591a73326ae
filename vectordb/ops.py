"""What the proxy's tasks may do to the engine: the narrow, public interface task bodies call.

`EngineOps` owns the open collections of one data directory (name -> `Collection`) and the operations
that need more than one collection's state: creating and dropping collections and partitions,
loading and releasing them on the query coordinator, sealing and compacting in the background, and
the maintenance pass the engine's thread runs. Tasks reach a collection through `get(name,
expect_id=...)`; nothing outside this module touches the registry.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vectordb.catalog import DEFAULT_PARTITION_ID, Catalog, CollectionMeta, PartitionMeta
from vectordb.collection import Collection
from vectordb.compaction import CompactionPolicy, CompactionResult, compact, needs_compaction
from vectordb.errors import (
    CollectionExists,
    CollectionNotFound,
    EngineClosed,
    InvalidRequest,
    PartitionExists,
    PartitionNotFound,
    StorageError,
)
from vectordb.proxy import MetaCache, Proxy, Task
from vectordb.querycoord import LoadState, Priority, QueryCoordinator
from vectordb.schema import PARTITION_FIELD, CollectionSchema, IndexParams, check_name
from vectordb.segment import GrowingSegment, SealedSegment
from vectordb.streaming.options import StreamingOptions
from vectordb.tasks import CompactTask, ControlTask, FlushTask
from vectordb.tso import TimestampOracle

log = logging.getLogger(__name__)

MAX_PARTITIONS = 1024


@dataclass(frozen=True, slots=True)
class SealPolicy:
    """When a growing segment is sealed: at `rows` rows, about `bytes` bytes, or `age_s` seconds after
    its first row (None: no such limit)."""

    rows: int
    bytes: int | None = None
    age_s: float | None = None

    def due(self, growing: GrowingSegment) -> bool:
        if growing.n >= self.rows:
            return True
        if self.bytes is not None and growing.size_bytes >= self.bytes:
            return True
        return self.age_s is not None and growing.n > 0 and growing.age_s() >= self.age_s


class EngineOps:
    """The collections of one data directory and the operations tasks run on them (thread-safe)."""

    def __init__(
        self,
        directory: Path,
        *,
        tso: TimestampOracle,
        catalog: Catalog,
        querycoord: QueryCoordinator,
        seal: SealPolicy,
        compaction: CompactionPolicy,
        fsync: bool,
        streaming: StreamingOptions | None,
    ) -> None:
        self.directory = directory
        self.tso = tso
        self.catalog = catalog
        self.querycoord = querycoord
        self.seal = seal
        self.compaction = compaction
        self._fsync = fsync
        self._streaming = streaming
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._proxy: Proxy | None = None
        self._background_lock = threading.Lock()
        self._background_requested: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------------------ opening, closing

    def open_all(self) -> None:
        """Open every collection of the catalog (recovering from its WAL) and load it for queries;
        remove the directories of collections dropped before a crash."""
        root = self.directory / "collections"
        root.mkdir(exist_ok=True)
        live = {str(m.id) for m in self.catalog.all()}
        for p in root.iterdir():
            if p.name not in live:
                shutil.rmtree(p)
        for meta in self.catalog.all():
            self._collections[meta.name] = Collection.open(
                meta, self._dir(meta.id), self.tso, self.catalog, fsync=self._fsync, streaming=self._streaming
            )
        for coll in self._collections.values():
            self.querycoord.load_collection(coll.name, sealed_segments(coll)).result()

    def attach(self, proxy: Proxy) -> None:
        """The proxy background seals and compactions are submitted to."""
        self._proxy = proxy

    @property
    def meta_cache(self) -> MetaCache:
        assert self._proxy is not None, "EngineOps.attach(proxy) first"
        return self._proxy.meta_cache

    def close_all(self) -> None:
        with self._lock:
            for coll in self._collections.values():
                coll.close()

    def _dir(self, coll_id: int) -> Path:
        return self.directory / "collections" / str(coll_id)

    # ----------------------------------------------------------------------------------- the registry

    def get(self, name: str, *, expect_id: int | None = None) -> Collection:
        """The open collection `name` (with `expect_id`: only that incarnation of it); else
        CollectionNotFound, and the cached schema is dropped."""
        with self._lock:
            coll = self._collections.get(name)
        if coll is None or (expect_id is not None and coll.meta.id != expect_id):
            if self._proxy is not None:
                self.meta_cache.invalidate(name)
            raise CollectionNotFound(f"can't find collection {name!r}: it does not exist")
        return coll

    def exists(self, name: str) -> bool:
        with self._lock:
            return name in self._collections

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def all(self) -> list[Collection]:
        with self._lock:
            return list(self._collections.values())

    def create(self, name: str, schema: CollectionSchema, index: IndexParams, if_not_exists: bool, ts: int) -> bool:
        """Create the collection (id `ts`) and load it; False when `if_not_exists` found it as asked."""
        existing = self.catalog.get(name)
        if existing is not None:
            if if_not_exists and existing.schema == schema:
                return False
            detail = "with a different schema" if if_not_exists else ""
            raise CollectionExists(f"collection {name!r} already exists {detail}".strip())
        meta = CollectionMeta(id=ts, name=name, schema=schema, index=index, created_ts=ts)
        coll = Collection.create(
            meta, self._dir(meta.id), self.tso, self.catalog, fsync=self._fsync, streaming=self._streaming
        )
        try:
            self.catalog.put(meta)
        except BaseException:
            coll.close()
            shutil.rmtree(coll.directory, ignore_errors=True)
            raise
        with self._lock:
            self._collections[name] = coll
        self.querycoord.load_collection(name, {}).result()
        return True

    def drop(self, name: str) -> None:
        """Drop the collection and its files; a missing collection is not an error."""
        with self._lock:
            coll = self._collections.get(name)
        if coll is None:
            return
        with coll.flush_lock:  # a running flush must not re-add the collection to the catalog
            self.catalog.remove(name)
            with self._lock:
                self._collections.pop(name, None)
            coll.close()
        self.querycoord.forget(name)
        shutil.rmtree(coll.directory, ignore_errors=True)

    # ------------------------------------------------------------------------- segments and compaction

    def after_write(self, coll: Collection) -> None:
        """Schedule a background flush when the growing segment is due (rows, bytes, age)."""
        if self.seal.due(coll.growing):
            self.request_seal(coll.name)

    def after_flush(self, name: str) -> None:
        """Hand newly sealed segments off to the query workers (normal priority; not awaited)."""
        coll = self.get(name)
        self.querycoord.sync(name, sealed_segments(coll), Priority.NORMAL)

    def compact(self, name: str) -> CompactionResult:
        """Merge small sealed segments and purge deleted rows (searches keep running meanwhile)."""
        coll = self.get(name)

        def on_swap(removed: tuple[int, ...], added: tuple[SealedSegment, ...]) -> None:
            self.querycoord.sync(name, sealed_segments(coll), Priority.LOW)

        return compact(coll, self.tso, self.compaction, on_swap=on_swap)

    def request_seal(self, name: str) -> None:
        """Schedule a background flush of `name` unless one is already pending."""
        self._request_background("seal", name, lambda: FlushTask(self, name))

    def request_compact(self, name: str) -> None:
        """Schedule a background compaction of `name` unless one is already pending."""
        self._request_background("compact", name, lambda: CompactTask(self, name))

    def _request_background(self, kind: str, name: str, make: Callable[[], ControlTask]) -> None:
        assert self._proxy is not None, "EngineOps.attach(proxy) first"
        key = (kind, name)
        with self._background_lock:
            if key in self._background_requested:
                return
            self._background_requested.add(key)
        try:
            task: Task[Any] = self._proxy.submit(make())
        except EngineClosed:
            log.info("not starting %s of %s: the engine is closing", kind, name)
            with self._background_lock:
                self._background_requested.discard(key)
            return
        task.future.add_done_callback(lambda f: self._background_done(key, f))

    def _background_done(self, key: tuple[str, str], future: Future[Any]) -> None:
        with self._background_lock:
            self._background_requested.discard(key)
        if not future.cancelled() and future.exception() is not None:
            log.error("background %s of %s failed: %s", key[0], key[1], future.exception())

    def maintain(self) -> None:
        """One maintenance pass: recover collections from storage failures, seal by age, trigger
        compactions, balance the query workers."""
        for coll in self.all():
            if coll.needs_recovery:
                try:
                    coll.recover()
                except StorageError as e:
                    log.warning("collection %s is still unavailable: %s", coll.name, e)
                    continue
            if self.seal.due(coll.growing):
                self.request_seal(coll.name)
            if self.compaction.auto and needs_compaction(list(sealed_segments(coll).values()), self.compaction):
                self.request_compact(coll.name)
        self.querycoord.balance()

    # ------------------------------------------------------------------------------ load and release

    def load(self, name: str) -> None:
        coll = self.get(name)
        self.querycoord.load_collection(name, sealed_segments(coll)).result()

    def release(self, name: str) -> None:
        self.get(name)
        self.querycoord.release_collection(name).result()

    def load_state(self, name: str) -> LoadState:
        if not self.exists(name):
            return LoadState.NOT_EXIST
        return self.querycoord.state(name)

    def check_loaded(self, name: str) -> None:
        """CollectionNotLoaded unless the collection is loaded on the query workers."""
        self.querycoord.check_loaded(name)

    # ------------------------------------------------------------------------------------ partitions

    def create_partition(self, name: str, partition: str, ts: int) -> None:
        check_name("partition", partition)
        coll = self.get(name)
        with coll.lock:
            if coll.meta.partition(partition) is not None:
                raise PartitionExists(f"partition {partition!r} already exists in {name!r}")
            if len(coll.meta.partitions) >= MAX_PARTITIONS:
                raise InvalidRequest(f"a collection holds at most {MAX_PARTITIONS} partitions")
            meta = coll.meta.with_changes(partitions=(*coll.meta.partitions, PartitionMeta(ts, partition)))
            self.catalog.put(meta)
            coll.meta = meta

    def drop_partition(self, name: str, partition: str) -> None:
        """Delete the partition's rows and forget it; "_default" cannot be dropped."""
        coll = self.get(name)
        with coll.lock:  # re-entrant: the delete and the catalog change see one state
            p = coll.meta.partition(partition)
            if p is None:
                raise PartitionNotFound(f"partition {partition!r} not found in {name!r}")
            if p.id == DEFAULT_PARTITION_ID:
                raise InvalidRequest(f"the {partition!r} partition cannot be dropped")
            ts, views = coll.snapshot()
            pks = []
            for view in views:
                rows = np.flatnonzero(view.visible(ts) & (view.column(PARTITION_FIELD) == p.id))
                pks += [view.segment.pks[off] for off in rows.tolist()]
            coll.delete_pks(pks)  # WAL-logged first: a crash before the catalog write keeps an empty partition
            meta = coll.meta.with_changes(partitions=tuple(q for q in coll.meta.partitions if q.id != p.id))
            self.catalog.put(meta)
            coll.meta = meta


def sealed_segments(coll: Collection) -> dict[int, SealedSegment]:
    with coll.lock:
        return {sid: s for sid, s in coll.segments.items() if isinstance(s, SealedSegment)}
