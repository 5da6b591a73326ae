"""The embedded engine: owns a data directory and serves every request through the proxy's tasks.

Layout of the data directory:

    LOCK                       exclusive flock while an engine owns the directory
    tso.json                   the timestamp oracle's reserved bound
    catalog.json               collections, schemas, indexes, WAL generation, sealed segments
    collections/<id>/wal/      WAL generations (<gen>.log)
    collections/<id>/segments/<segment id>/   vectors.npy norms.npy insert_ts.npy rows.json
                               index.faiss meta.json deletes-<gen>.npy

The engine wires the parts together: the timestamp oracle, the catalog, the open collections and
what tasks may do to them (`vectordb.ops.EngineOps`), the proxy's task queues and the query
coordinator. Its methods are the synchronous API; each builds its task in `vectordb.requests` (as the
async `vectordb.facade.AsyncEngine` does) and waits for it.

Background maintenance (one thread, stopped on close; `EngineOps.maintain`): rebuilds collections that
a storage failure left ahead of their WAL (see `vectordb.collection`) once the disk works again, seals
growing segments older than `seal_age_s`, starts low-priority compactions when the policy's triggers
fire, and balances the query workers. Collections are loaded on the query coordinator when created or
opened.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vectordb.base import Filter, Rows
from vectordb.catalog import Catalog, CollectionMeta
from vectordb.compaction import CompactionPolicy, CompactionResult
from vectordb.fsutil import DirLock
from vectordb.ops import EngineOps, SealPolicy
from vectordb.proxy import Proxy, ProxyLimits, Task
from vectordb.querycoord import QueryCoordinator
from vectordb.requests import Requests
from vectordb.results import Hit
from vectordb.schema import CollectionSchema, IndexParams
from vectordb.streaming.options import StreamingOptions
from vectordb.tso import TimestampOracle
from vectordb.wal import resolve_fsync_policy

log = logging.getLogger(__name__)

DEFAULT_SEAL_ROWS = 32768
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
        self.seal = SealPolicy(seal_rows, seal_bytes, seal_age_s)
        self._dir_lock = DirLock(directory)
        self._dir_lock.acquire()
        try:
            self.tso = TimestampOracle(directory / "tso.json")
            self.catalog = Catalog(directory / "catalog.json")
            self.querycoord = QueryCoordinator(workers=query_workers, per_worker_concurrency=worker_concurrency)
            self.ops = EngineOps(
                directory,
                tso=self.tso,
                catalog=self.catalog,
                querycoord=self.querycoord,
                seal=self.seal,
                compaction=compaction or CompactionPolicy(),
                fsync=fsync,
                streaming=streaming,
            )
            self.ops.open_all()
            self.proxy = Proxy(self.tso, self.catalog, limits)
            self.ops.attach(self.proxy)
        except BaseException:
            if hasattr(self, "proxy"):
                self.proxy.close()
            if hasattr(self, "querycoord"):
                self.querycoord.close()
            if hasattr(self, "ops"):
                self.ops.close_all()
            self._dir_lock.release()
            raise
        self._requests = Requests(self.ops)
        self._closed = False
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
        self.ops.close_all()
        self._dir_lock.release()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ public API

    def _wait(self, task: Task[Any]) -> Any:
        """Run `task` through the proxy and return its result (DQL in this thread, the rest queued)."""
        return self.proxy.execute(task)

    def create_collection(
        self, name: str, schema: CollectionSchema, index: IndexParams | None = None, *, if_not_exists: bool = False
    ) -> None:
        self._wait(self._requests.create_collection(name, schema, index, if_not_exists))

    def drop_collection(self, name: str) -> None:
        """Drop the collection and its files; dropping a missing collection is not an error."""
        self._wait(self._requests.drop_collection(name))

    def has_collection(self, name: str) -> bool:
        return bool(self._wait(self._requests.has_collection(name)))

    def list_collections(self) -> list[str]:
        return list(self._wait(self._requests.list_collections()))

    def describe(self, name: str) -> CollectionMeta:
        meta: CollectionMeta = self._wait(self._requests.describe(name))
        return meta

    def describe_collection(self, name: str) -> CollectionSchema:
        return self.describe(name).schema

    def describe_index(self, name: str, *, field_name: str | None = None) -> IndexParams:
        return self.describe(name).index_of(field_name)

    def create_index(self, name: str, index: IndexParams, *, field_name: str | None = None) -> None:
        """Replace the index definition and rebuild the index of every sealed segment (`field_name`: of
        that vector field; None: the first)."""
        self._wait(self._requests.create_index(name, index, field_name))

    def insert(self, name: str, rows: Rows, *, partition_name: str | None = None) -> list[Any]:
        return list(self._wait(self._requests.write(name, rows, upsert=False, partition_name=partition_name)))

    def upsert(self, name: str, rows: Rows, *, partition_name: str | None = None) -> list[Any]:
        return list(self._wait(self._requests.write(name, rows, upsert=True, partition_name=partition_name)))

    def delete(self, name: str, *, ids: Sequence[Any] | None = None, filter: Filter | None = None) -> int:
        return int(self._wait(self._requests.delete(name, ids, filter)))

    def search(
        self,
        name: str,
        vectors: Any,
        *,
        limit: int,
        filter: Filter | None = None,
        output_fields: Sequence[str] | None = None,
        consistency_level: str = "Strong",
        search_params: Mapping[str, Any] | None = None,
        partition_names: Sequence[str] | None = None,
        anns_field: str | None = None,
    ) -> list[list[Hit]]:
        task = self._requests.search(
            name,
            vectors,
            limit=limit,
            filter=filter,
            output_fields=output_fields,
            consistency_level=consistency_level,
            search_params=search_params,
            partition_names=partition_names,
            anns_field=anns_field,
        )
        return self._wait(task)  # type: ignore[no-any-return]

    def query(
        self,
        name: str,
        *,
        filter: Filter = "",
        output_fields: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        consistency_level: str = "Strong",
        partition_names: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        task = self._requests.query(
            name,
            filter=filter,
            output_fields=output_fields,
            limit=limit,
            offset=offset,
            consistency_level=consistency_level,
            partition_names=partition_names,
        )
        return self._wait(task)  # type: ignore[no-any-return]

    def get(self, name: str, ids: Sequence[Any], output_fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return self._wait(self._requests.get(name, ids, output_fields))  # type: ignore[no-any-return]

    def count(self, name: str) -> int:
        return int(self._wait(self._requests.count(name)))

    def flush(self, name: str) -> None:
        """Seal growing data to disk with its index and truncate the WAL."""
        self._wait(self._requests.flush(name))

    def compact(self, name: str) -> CompactionResult:
        """Merge small sealed segments and purge deleted rows now (searches keep running meanwhile)."""
        return self._wait(self._requests.compact(name))  # type: ignore[no-any-return]

    def load_collection(self, name: str) -> None:
        """Load the collection on the query workers (collections are loaded when created or opened)."""
        self._wait(self._requests.load_collection(name))

    def release_collection(self, name: str) -> None:
        """Release the collection: search and query raise CollectionNotLoaded until it is loaded again."""
        self._wait(self._requests.release_collection(name))

    def get_load_state(self, name: str) -> str:
        """ "LoadStateLoaded", "LoadStateLoading", "LoadStateNotLoad" or "LoadStateNotExist"."""
        return str(self._wait(self._requests.get_load_state(name)))

    def create_partition(self, name: str, partition: str) -> None:
        self._wait(self._requests.create_partition(name, partition))

    def drop_partition(self, name: str, partition: str) -> None:
        """Delete the partition's rows and forget it; "_default" cannot be dropped."""
        self._wait(self._requests.drop_partition(name, partition))

    def has_partition(self, name: str, partition: str) -> bool:
        return bool(self._wait(self._requests.has_partition(name, partition)))

    def list_partitions(self, name: str) -> list[str]:
        return list(self._wait(self._requests.list_partitions(name)))

    def metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per task type and phase (queue, pre_execute, execute, post_execute, total): count, total_s,
        mean_s, max_s since the engine opened."""
        return self.proxy.metrics.snapshot()

    def _maintenance_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.ops.maintain()
