"""The proxy's task system: every request is a task that runs through one of four scheduled queues.

- DDL (create/drop collection, create index): strictly serial.
- DML (insert/upsert/delete): ordered per shard channel (one channel per collection), concurrent
  across channels.
- DQL (search/query/get/count): concurrent up to a limit. `Proxy.execute` runs a DQL task in the
  caller's thread under that limit (no queue, scheduler or pool hop: a single-vector search is a
  few hundred microseconds, comparable to a thread hand-off); `run_async` awaits one from an
  event loop with a single hop onto a worker thread.
- control (flush, load/release, compact): ordered per collection.

A task's life: `on_enqueue` (id and begin timestamp) -> `pre_execute` (validate against the cached
schema) -> `execute` -> `post_execute` -> end timestamp; `wait_to_finish` blocks for the result and
re-raises the task's error.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from vectordb.catalog import Catalog, CollectionMeta
from vectordb.errors import CollectionNotFound, EngineClosed, StorageError
from vectordb.metrics import ProxyMetrics
from vectordb.ratelimit import RateLimiter
from vectordb.tso import TimestampOracle

log = logging.getLogger(__name__)

T = TypeVar("T")


class Task(ABC, Generic[T]):
    """A request on its way through the proxy."""

    queue_name: ClassVar[str]

    def __init__(self) -> None:
        self.id = 0
        self.begin_ts = 0
        self.end_ts = 0
        self.future: Future[T] = Future()

    def channel(self) -> str | None:
        """Tasks with the same channel run one at a time, in enqueue order (ordered queues only)."""
        return None

    def on_enqueue(self, task_id: int, ts: int) -> None:
        self.id = task_id
        self.begin_ts = ts
        self.enqueued_at = time.perf_counter()

    def rate_cost(self) -> tuple[str, str, float] | None:
        """(limit kind, collection, cost) charged to the per-collection rate limiter; None: free."""
        return None

    def pre_execute(self) -> None:
        """Validate the request; raise to fail the task before it touches any state."""

    @abstractmethod
    def execute(self) -> Any: ...

    def post_execute(self, result: Any) -> T:
        return result  # type: ignore[no-any-return]

    def wait_to_finish(self, timeout_s: float | None = None) -> T:
        return self.future.result(timeout_s)

    def run(self, end_ts: Callable[[], int], metrics: ProxyMetrics | None = None) -> None:
        """Run every stage and settle the future; errors are recorded on the future, not swallowed."""
        if not self.future.set_running_or_notify_cancel():
            return  # cancelled by the caller before it started
        started = time.perf_counter()
        phases: dict[str, float] = {"queue": started - getattr(self, "enqueued_at", started)}
        try:
            self.pre_execute()
            t1 = time.perf_counter()
            raw = self.execute()
            t2 = time.perf_counter()
            result = self.post_execute(raw)
            phases.update(pre_execute=t1 - started, execute=t2 - t1, post_execute=time.perf_counter() - t2)
        except BaseException as e:  # the task boundary: the waiter re-raises it
            self._stamp_end(end_ts)
            if isinstance(e, OSError):  # the disk (full, failing): not the request's fault, retry later
                e = _storage_error(self, e)
            self.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            self._stamp_end(end_ts)
            self.future.set_result(result)
        finally:
            if metrics is not None:
                phases["total"] = time.perf_counter() - started + phases["queue"]
                metrics.record(type(self).__name__, phases)

    def _stamp_end(self, end_ts: Callable[[], int]) -> None:
        try:
            self.end_ts = end_ts()
        except OSError as e:  # the TSO could not persist its window (disk full): the outcome stands
            log.warning("%r: no end timestamp: %s", self, e)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} channel={self.channel()!r}>"


def _storage_error(task: Task[Any], error: OSError) -> StorageError:
    wrapped = StorageError(f"{type(task).__name__} failed on the data directory: {error}")
    wrapped.__cause__ = error
    return wrapped


@dataclass(frozen=True, slots=True)
class _ChannelDone:
    channel: str


_STOP = object()


class ProxyQueue:
    """One queue with its own scheduling thread dispatching onto a bounded worker pool."""

    def __init__(self, name: str, *, max_workers: int, ordered: bool, end_ts: Callable[[], int],
                 metrics: ProxyMetrics | None = None) -> None:
        self.name = name
        self._metrics = metrics
        self._ordered = ordered
        self._end_ts = end_ts
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix=f"vectordb-{name}")
        self._waiting: dict[str, deque[Task[Any]]] = {}
        self._busy: set[str] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"vectordb-{name}-scheduler", daemon=True)
        self._thread.start()

    def enqueue(self, task: Task[Any]) -> None:
        self._inbox.put(task)

    def stop(self) -> None:
        """Run everything already enqueued, then stop the scheduler and the workers."""
        self._inbox.put(_STOP)
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _loop(self) -> None:
        while not (self._stopping and not self._busy):
            item = self._inbox.get()
            if item is _STOP:
                self._stopping = True
            elif isinstance(item, _ChannelDone):
                waiting = self._waiting.get(item.channel)
                if waiting:
                    self._dispatch(waiting.popleft(), item.channel)
                else:
                    self._waiting.pop(item.channel, None)
                    self._busy.discard(item.channel)
            else:
                channel = item.channel() if self._ordered else None
                if channel is None:
                    self._pool.submit(item.run, self._end_ts, self._metrics)
                elif channel in self._busy:
                    self._waiting.setdefault(channel, deque()).append(item)
                else:
                    self._busy.add(channel)
                    self._dispatch(item, channel)

    def _dispatch(self, task: Task[Any], channel: str) -> None:
        self._pool.submit(self._run_in_channel, task, channel)

    def _run_in_channel(self, task: Task[Any], channel: str) -> None:
        try:
            task.run(self._end_ts, self._metrics)
        finally:
            self._inbox.put(_ChannelDone(channel))


class MetaCache:
    """Collection metadata by name, read through from the catalog; DDL invalidates entries."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._lock = threading.Lock()
        self._entries: dict[str, CollectionMeta] = {}

    def get(self, name: str) -> CollectionMeta:
        with self._lock:
            meta = self._entries.get(name)
        if meta is None:
            meta = self._catalog.get(name)
            if meta is None:
                raise CollectionNotFound(f"can't find collection {name!r}: it does not exist")
            with self._lock:
                self._entries[name] = meta
        return meta

    def invalidate(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    dml_workers: int = 4
    dql_workers: int = 4
    control_workers: int = 2
    dml_rows_per_s: float = 0.0
    """Per-collection insert/upsert/delete rate (rows per second); 0 = unlimited."""
    dql_requests_per_s: float = 0.0
    """Per-collection search/query/get rate (requests per second); 0 = unlimited."""


class Proxy:
    """Owns the four queues; `submit` stamps a task and hands it to its queue."""

    def __init__(self, tso: TimestampOracle, catalog: Catalog, limits: ProxyLimits = ProxyLimits()) -> None:
        self.tso = tso
        self.meta_cache = MetaCache(catalog)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self.metrics = ProxyMetrics()
        self._limiter = RateLimiter({"dml": limits.dml_rows_per_s, "dql": limits.dql_requests_per_s})
        self._dql_slots = threading.BoundedSemaphore(limits.dql_workers)
        self._inline_running = 0
        self._inline_idle = threading.Condition(self._lock)
        self._queues = {
            "ddl": ProxyQueue("ddl", max_workers=1, ordered=True, end_ts=tso.next,
                                 metrics=self.metrics),
            "dml": ProxyQueue("dml", max_workers=limits.dml_workers, ordered=True, end_ts=tso.next,
                                 metrics=self.metrics),
            "dql": ProxyQueue("dql", max_workers=limits.dql_workers, ordered=False, end_ts=tso.next,
                                 metrics=self.metrics),
            "control": ProxyQueue("control", max_workers=limits.control_workers, ordered=True, end_ts=tso.next,
                                 metrics=self.metrics),
        }

    def _admit(self, task: Task[Any]) -> None:
        cost = task.rate_cost()
        if cost is not None:
            self._limiter.acquire(*cost)

    def submit(self, task: Task[T]) -> Task[T]:
        self._admit(task)
        with self._lock:
            if self._closed:
                raise EngineClosed("the vector engine is closed")
            task.on_enqueue(next(self._ids), self.tso.next())
            self._queues[task.queue_name].enqueue(task)
        return task

    def execute(self, task: Task[T]) -> T:
        """Run `task` to completion and return its result (or raise its error).

        DQL tasks run right here, in the caller's thread, once one of the DQL queue's `dql_workers`
        slots is free; other tasks go through their queue (ordering) and this waits for them. Call
        it from a worker thread, never on an event loop (use `run_async` there).
        """
        if task.queue_name != "dql":
            return self.submit(task).wait_to_finish()
        self._admit(task)
        with self._lock:
            if self._closed:
                raise EngineClosed("the vector engine is closed")
            task.on_enqueue(next(self._ids), self.tso.next())
            self._inline_running += 1
        try:
            with self._dql_slots:
                task.run(self.tso.next, self.metrics)
        finally:
            with self._lock:
                self._inline_running -= 1
                if not self._inline_running:
                    self._inline_idle.notify_all()
        return task.wait_to_finish()

    async def run_async(self, task: Task[T]) -> T:
        """Await `task` from an event loop without blocking it: DQL in one hop onto a worker thread,
        the rest through their queues."""
        if task.queue_name == "dql":
            return await asyncio.to_thread(self.execute, task)
        return await asyncio.wrap_future(self.submit(task).future)

    def close(self) -> None:
        """Refuse new tasks, finish the queued and running ones, stop the schedulers (DDL last)."""
        with self._lock:
            self._closed = True
            while self._inline_running:
                self._inline_idle.wait()
        for name in ("dml", "dql", "control", "ddl"):
            self._queues[name].stop()
