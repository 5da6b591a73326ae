"""The embedded engine: owns a data directory and serves every request through the proxy's tasks.

Layout of the data directory:

    LOCK                       exclusive flock while an engine owns the directory
    tso.json                   the timestamp oracle's reserved bound
    catalog.json               collections, schemas, indexes, WAL generation, sealed segments
    collections/<id>/wal/      WAL generations (<gen>.log)
    collections/<id>/segments/<segment id>/   vectors.npy norms.npy insert_ts.npy rows.json
                               index.faiss meta.json deletes-<gen>.npy

Background maintenance (one thread, stopped on close): rebuilds collections that a storage failure
left ahead of their WAL (see `vectordb.collection`) once the disk works again, seals growing segments older than
`seal_age_s`, starts low-priority compactions when the policy's triggers fire, and balances the query
workers. Collections are loaded on the query coordinator when created or opened.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
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
from vectordb.fsutil import DirLock
from vectordb.proxy import Proxy, ProxyLimits, Task
from vectordb.querycoord import LoadState, Priority, QueryCoordinator
from vectordb.results import Hit
from vectordb.schema import PARTITION_FIELD, CollectionSchema, IndexParams, check_name
from vectordb.segment import GrowingSegment, SealedSegment
from vectordb.streaming.options import StreamingOptions
from vectordb.tasks import (
    CompactTask,
    CountTask,
    CreateCollectionTask,
    CreateIndexTask,
    CreatePartitionTask,
    DeleteTask,
    DescribeCollectionTask,
    DropCollectionTask,
    DropPartitionTask,
    FlushTask,
    GetLoadStateTask,
    GetTask,
    HasCollectionTask,
    HasPartitionTask,
    InsertTask,
    ListCollectionsTask,
    ListPartitionsTask,
    LoadCollectionTask,
    PartitionedQueryTask,
    PartitionedSearchTask,
    ReleaseCollectionTask,
)
from vectordb.tso import TimestampOracle
from vectordb.wal import resolve_fsync_policy

log = logging.getLogger(__name__)

DEFAULT_SEAL_ROWS = 32768
MAX_PARTITIONS = 1024
_MAX_MAINTENANCE_INTERVAL_S = 1.0


class Engine:
    """A synchronous, thread-safe vector store over one data directory. Use `Engine.open`."""

    def __init__(
        self,
        directory: Path,
        *,
        seal_rows: int,
        fsync: bool,
        limits: ProxyLimits,
        seal_bytes: int | None = None,
        seal_age_s: float | None = None,
        compaction: CompactionPolicy | None = None,
        query_workers: int = 2,
        worker_concurrency: int = 2,
        streaming: StreamingOptions | None = None,
    ) -> None:
        self.directory = directory
        self._streaming = streaming
        self.seal_rows = seal_rows
        self.seal_bytes = seal_bytes
        self.seal_age_s = seal_age_s
        self.compaction = compaction or CompactionPolicy()
        self._fsync = fsync
        self._dir_lock = DirLock(directory)
        self._dir_lock.acquire()
        try:
            self.tso = TimestampOracle(directory / "tso.json")
            self.catalog = Catalog(directory / "catalog.json")
            self._collections: dict[str, Collection] = {}
            self._colls_lock = threading.Lock()
            self._remove_dropped_dirs()
            for meta in self.catalog.all():
                self._collections[meta.name] = Collection.open(
                    meta, self._coll_dir(meta.id), self.tso, self.catalog, fsync=fsync, streaming=streaming
                )
            self.proxy = Proxy(self.tso, self.catalog, limits)
            self.querycoord = QueryCoordinator(workers=query_workers, per_worker_concurrency=worker_concurrency)
            for coll in self._collections.values():
                self.querycoord.load_collection(coll.name, _sealed(coll)).result()
        except BaseException:
            if hasattr(self, "querycoord"):
                self.querycoord.close()
            if hasattr(self, "proxy"):
                self.proxy.close()
            for coll in getattr(self, "_collections", {}).values():
                coll.close()
            self._dir_lock.release()
            raise
        self._closed = False
        self._background_lock = threading.Lock()
        self._background_requested: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        interval_s = min(_MAX_MAINTENANCE_INTERVAL_S, seal_age_s / 4) if seal_age_s else _MAX_MAINTENANCE_INTERVAL_S
        self._maintenance = threading.Thread(
            target=self._maintenance_loop, args=(interval_s,), name="vectordb-maintenance", daemon=True
        )
        self._maintenance.start()

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        seal_rows: int = DEFAULT_SEAL_ROWS,
        fsync: bool = True,
        fsync_policy: str | None = None,
        streaming: StreamingOptions | None = None,
        limits: ProxyLimits | None = None,
        seal_bytes: int | None = None,
        seal_age_s: float | None = None,
        compaction: CompactionPolicy | None = None,
        query_workers: int = 2,
        worker_concurrency: int = 2,
    ) -> Engine:
        """Open (creating if needed) the data directory at `path`, recovering from its WAL.

        A growing segment is sealed once it holds `seal_rows` rows, or about `seal_bytes` bytes, or
        its first row is `seal_age_s` seconds old (None: no such limit). `compaction` sets when sealed
        segments are merged (see CompactionPolicy); `query_workers` x `worker_concurrency` bounds the
        query coordinator's load/release work. `fsync_policy` is always / batch / interval / none (see
        `vectordb.wal`); without it `fsync=True` means batch (group commit) and `fsync=False` none;
        `streaming` sets the rest (fsync interval, Bounded staleness, read timeout).
        Raises DataDirLocked when another engine owns the directory.
        """
        if seal_rows < 1:
            raise ValueError("seal_rows must be positive")
        if seal_bytes is not None and seal_bytes < 1:
            raise ValueError("seal_bytes must be positive")
        if seal_age_s is not None and not seal_age_s > 0:
            raise ValueError("seal_age_s must be positive")
        policy = resolve_fsync_policy(fsync_policy, fsync if fsync_policy is None else None)
        streaming = dataclasses.replace(streaming or StreamingOptions(), fsync_policy=policy)
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(
            directory,
            seal_rows=seal_rows,
            fsync=fsync,
            limits=limits or ProxyLimits(),
            seal_bytes=seal_bytes,
            seal_age_s=seal_age_s,
            compaction=compaction,
            query_workers=query_workers,
            worker_concurrency=worker_concurrency,
            streaming=streaming,
        )

    def close(self) -> None:
        """Finish queued tasks, close WALs and release the directory lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._maintenance.join()
        self.proxy.close()
        self.querycoord.close()
        with self._colls_lock:
            for coll in self._collections.values():
                coll.close()
        self._dir_lock.release()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ public API

    def create_collection(
        self, name: str, schema: CollectionSchema, index: IndexParams | None = None, *, if_not_exists: bool = False
    ) -> None:
        self.proxy.submit(
            CreateCollectionTask(self, name, schema, index or IndexParams(), if_not_exists)
        ).wait_to_finish()

    def drop_collection(self, name: str) -> None:
        """Drop the collection and its files; dropping a missing collection is not an error."""
        self.proxy.submit(DropCollectionTask(self, name)).wait_to_finish()

    def has_collection(self, name: str) -> bool:
        return self.proxy.submit(HasCollectionTask(self, name)).wait_to_finish()  # type: ignore[no-any-return]

    def list_collections(self) -> list[str]:
        return self.proxy.submit(ListCollectionsTask(self, "")).wait_to_finish()  # type: ignore[no-any-return]

    def describe_collection(self, name: str) -> CollectionSchema:
        meta: CollectionMeta = self.proxy.submit(DescribeCollectionTask(self, name)).wait_to_finish()
        return meta.schema

    def describe_index(self, name: str) -> IndexParams:
        meta: CollectionMeta = self.proxy.submit(DescribeCollectionTask(self, name)).wait_to_finish()
        return meta.index

    def create_index(self, name: str, index: IndexParams) -> None:
        """Replace the index definition and rebuild the index of every sealed segment."""
        self.proxy.submit(CreateIndexTask(self, name, index)).wait_to_finish()

    def insert(self, name: str, rows: Sequence[Mapping[str, Any]], *, partition_name: str | None = None) -> list[Any]:
        return self.submit_insert(name, rows, partition_name=partition_name).wait_to_finish()  # type: ignore[no-any-return]

    def upsert(self, name: str, rows: Sequence[Mapping[str, Any]], *, partition_name: str | None = None) -> list[Any]:
        task = self.submit_insert(name, rows, upsert=True, partition_name=partition_name)
        return task.wait_to_finish()  # type: ignore[no-any-return]

    def delete(self, name: str, *, ids: Sequence[Any] | None = None, filter: str | None = None) -> int:
        return self.proxy.submit(DeleteTask(self, name, ids, filter)).wait_to_finish()  # type: ignore[no-any-return]

    def search(
        self,
        name: str,
        vectors: Any,
        *,
        limit: int,
        filter: str | None = None,
        output_fields: Sequence[str] | None = None,
        consistency_level: str = "Strong",
        search_params: Mapping[str, Any] | None = None,
        partition_names: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        task = PartitionedSearchTask(
            self,
            name,
            vectors,
            limit=limit,
            filter=filter,
            output_fields=output_fields,
            consistency_level=consistency_level,
            search_params=search_params,
            partition_names=partition_names,
        )
        return self.proxy.execute(task)  # type: ignore[no-any-return]

    def query(
        self,
        name: str,
        *,
        filter: str = "",
        output_fields: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        consistency_level: str = "Strong",
        partition_names: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        task = PartitionedQueryTask(
            self,
            name,
            filter=filter,
            output_fields=output_fields,
            limit=limit,
            offset=offset,
            consistency_level=consistency_level,
            partition_names=partition_names,
        )
        return self.proxy.execute(task)  # type: ignore[no-any-return]

    def get(self, name: str, ids: Sequence[Any], output_fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return self.proxy.execute(GetTask(self, name, ids, output_fields))  # type: ignore[no-any-return]

    def count(self, name: str) -> int:
        return self.proxy.execute(CountTask(self, name))  # type: ignore[no-any-return]

    def flush(self, name: str) -> None:
        """Seal growing data to disk with its index and truncate the WAL."""
        self.proxy.submit(FlushTask(self, name)).wait_to_finish()

    def metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per task type and phase (queue, pre_execute, execute, post_execute, total): count, total_s,
        mean_s, max_s since the engine opened."""
        return self.proxy.metrics.snapshot()

    def submit_insert(
        self, name: str, rows: Sequence[Mapping[str, Any]], *, upsert: bool = False, partition_name: str | None = None
    ) -> InsertTask:
        """Enqueue an insert/upsert without waiting (the async client awaits `task.future`)."""
        task = InsertTask(self, name, rows, upsert=upsert, partition_name=partition_name)
        self.proxy.submit(task)
        return task

    def compact(self, name: str) -> CompactionResult:
        """Merge small sealed segments and purge deleted rows now (searches keep running meanwhile)."""
        return self.proxy.submit(CompactTask(self, name)).wait_to_finish()  # type: ignore[no-any-return]

    def load_collection(self, name: str) -> None:
        """Load the collection on the query workers (collections are loaded when created or opened)."""
        self.proxy.submit(LoadCollectionTask(self, name)).wait_to_finish()

    def release_collection(self, name: str) -> None:
        """Release the collection: search and query raise CollectionNotLoaded until it is loaded again."""
        self.proxy.submit(ReleaseCollectionTask(self, name)).wait_to_finish()

    def get_load_state(self, name: str) -> str:
        """ "LoadStateLoaded", "LoadStateLoading", "LoadStateNotLoad" or "LoadStateNotExist"."""
        return str(self.proxy.submit(GetLoadStateTask(self, name)).wait_to_finish())

    def create_partition(self, name: str, partition: str) -> None:
        self.proxy.submit(CreatePartitionTask(self, name, partition)).wait_to_finish()

    def drop_partition(self, name: str, partition: str) -> None:
        """Delete the partition's rows and forget it; "_default" cannot be dropped."""
        self.proxy.submit(DropPartitionTask(self, name, partition)).wait_to_finish()

    def has_partition(self, name: str, partition: str) -> bool:
        return bool(self.proxy.submit(HasPartitionTask(self, name, partition)).wait_to_finish())

    def list_partitions(self, name: str) -> list[str]:
        return list(self.proxy.submit(ListPartitionsTask(self, name)).wait_to_finish())

    # -------------------------------------------------------------------------- used by the tasks

    def _coll_dir(self, coll_id: int) -> Path:
        return self.directory / "collections" / str(coll_id)

    def _remove_dropped_dirs(self) -> None:
        root = self.directory / "collections"
        root.mkdir(exist_ok=True)
        live = {str(m.id) for m in self.catalog.all()}
        for p in root.iterdir():
            if p.name not in live:
                shutil.rmtree(p)

    def _collection(self, name: str, *, expect_id: int | None = None) -> Collection:
        with self._colls_lock:
            coll = self._collections.get(name)
        if coll is None or (expect_id is not None and coll.meta.id != expect_id):
            self.proxy.meta_cache.invalidate(name)
            raise CollectionNotFound(f"collection {name!r} does not exist")
        return coll

    def _has_collection(self, name: str) -> bool:
        with self._colls_lock:
            return name in self._collections

    def _list_collections(self) -> list[str]:
        with self._colls_lock:
            return sorted(self._collections)

    def _create_collection(
        self, name: str, schema: CollectionSchema, index: IndexParams, if_not_exists: bool, ts: int
    ) -> None:
        existing = self.catalog.get(name)
        if existing is not None:
            if if_not_exists and existing.schema == schema:
                return
            detail = "with a different schema" if if_not_exists else ""
            raise CollectionExists(f"collection {name!r} already exists {detail}".strip())
        meta = CollectionMeta(id=ts, name=name, schema=schema, index=index, created_ts=ts)
        coll = Collection.create(
            meta, self._coll_dir(meta.id), self.tso, self.catalog, fsync=self._fsync, streaming=self._streaming
        )
        try:
            self.catalog.put(meta)
        except BaseException:
            coll.close()
            shutil.rmtree(coll.directory, ignore_errors=True)
            raise
        with self._colls_lock:
            self._collections[name] = coll
        self.querycoord.load_collection(name, {}).result()

    def _drop_collection(self, name: str) -> None:
        with self._colls_lock:
            coll = self._collections.get(name)
        if coll is None:
            return
        with coll.flush_lock:  # a running flush must not re-add the collection to the catalog
            self.catalog.remove(name)
            with self._colls_lock:
                self._collections.pop(name, None)
            coll.close()
        self.querycoord.forget(name)
        shutil.rmtree(coll.directory, ignore_errors=True)

    # ------------------------------------------------------------------------- segments and compaction

    def _should_seal(self, growing: GrowingSegment) -> bool:
        if growing.n >= self.seal_rows:
            return True
        if self.seal_bytes is not None and growing.size_bytes >= self.seal_bytes:
            return True
        return self.seal_age_s is not None and growing.n > 0 and growing.age_s() >= self.seal_age_s

    def _maybe_seal(self, name: str, coll: Collection) -> None:
        """After a write: schedule a background flush when the growing segment is due (rows, bytes, age)."""
        if self._should_seal(coll.growing):
            self._request_seal(name)

    def _after_flush(self, name: str) -> None:
        """Hand newly sealed segments off to the query workers (normal priority; not awaited)."""
        coll = self._collection(name)
        self.querycoord.sync(name, _sealed(coll), Priority.NORMAL)

    def _compact(self, name: str) -> CompactionResult:
        coll = self._collection(name)

        def on_swap(removed: tuple[int, ...], added: tuple[SealedSegment, ...]) -> None:
            self.querycoord.sync(name, _sealed(coll), Priority.LOW)

        return compact(coll, self.catalog, self.tso, self.compaction, on_swap=on_swap)

    def _request_seal(self, name: str) -> None:
        """Schedule a background flush of `name` unless one is already pending."""
        self._request_background("seal", name, lambda: FlushTask(self, name))

    def _request_compact(self, name: str) -> None:
        """Schedule a background compaction of `name` unless one is already pending."""
        self._request_background("compact", name, lambda: CompactTask(self, name))

    def _request_background(self, kind: str, name: str, make: Callable[[], Task[Any]]) -> None:
        key = (kind, name)
        with self._background_lock:
            if key in self._background_requested:
                return
            self._background_requested.add(key)
        try:
            task = self.proxy.submit(make())
        except EngineClosed:
            log.info("not starting %s of %s: the engine is closing", kind, name)
            with self._background_lock:
                self._background_requested.discard(key)
            return
        task.future.add_done_callback(lambda f: self._background_done(key, f))

    def _background_done(self, key: tuple[str, str], future: Any) -> None:
        with self._background_lock:
            self._background_requested.discard(key)
        if not future.cancelled() and future.exception() is not None:
            log.error("background %s of %s failed: %s", key[0], key[1], future.exception())

    def _maintenance_loop(self, interval_s: float) -> None:
        """Recover collections from storage failures, seal by age, trigger compactions, balance the
        query workers; until close."""
        while not self._stop.wait(interval_s):
            with self._colls_lock:
                collections = list(self._collections.values())
            for coll in collections:
                if coll.needs_recovery:
                    try:
                        coll.recover()
                    except StorageError as e:
                        log.warning("collection %s is still unavailable: %s", coll.name, e)
                        continue
                if self._should_seal(coll.growing):
                    self._request_seal(coll.name)
                if self.compaction.auto and needs_compaction(list(_sealed(coll).values()), self.compaction):
                    self._request_compact(coll.name)
            self.querycoord.balance()

    # ------------------------------------------------------------------------------ load and release

    def _load(self, name: str) -> None:
        coll = self._collection(name)
        self.querycoord.load_collection(name, _sealed(coll)).result()

    def _release(self, name: str) -> None:
        self._collection(name)
        self.querycoord.release_collection(name).result()

    def _load_state(self, name: str) -> LoadState:
        if not self._has_collection(name):
            return LoadState.NOT_EXIST
        return self.querycoord.state(name)

    # ------------------------------------------------------------------------------------ partitions

    def _create_partition(self, name: str, partition: str, ts: int) -> None:
        check_name("partition", partition)
        coll = self._collection(name)
        with coll.lock:
            if coll.meta.partition(partition) is not None:
                raise PartitionExists(f"partition {partition!r} already exists in {name!r}")
            if len(coll.meta.partitions) >= MAX_PARTITIONS:
                raise InvalidRequest(f"a collection holds at most {MAX_PARTITIONS} partitions")
            meta = coll.meta.with_changes(partitions=(*coll.meta.partitions, PartitionMeta(ts, partition)))
            self.catalog.put(meta)
            coll.meta = meta

    def _drop_partition(self, name: str, partition: str) -> None:
        coll = self._collection(name)
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


def _sealed(coll: Collection) -> dict[int, SealedSegment]:
    with coll.lock:
        return {sid: s for sid, s in coll.segments.items() if isinstance(s, SealedSegment)}
