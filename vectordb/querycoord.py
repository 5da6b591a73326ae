"""The query coordinator: loads and releases segments and channels on in-process query workers.

A `QueryWorker` holds views of the sealed segments assigned to it and the channels (a collection's
growing data) it serves. The coordinator runs coordination tasks on the workers:

- priorities: HIGH (a user's load/release), NORMAL (hand-off of a newly sealed segment), LOW
  (balance, the swap after a compaction); a free slot always goes to the most urgent runnable task;
- de-duplication: submitting a task whose key is already queued or running joins it (the same
  future; a more urgent duplicate raises the queued task's priority);
- per-worker concurrency: at most `max_concurrent` tasks run on one worker at a time.

A collection's load state gates search and query: a released collection raises CollectionNotLoaded.
Searches read the collection's segment views (taken under the collection lock); the workers' views are
the coordinator's record of what is loaded where.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from vectordb.errors import CollectionNotLoaded, EngineClosed
from vectordb.segment import Segment, SegmentView

log = logging.getLogger(__name__)


class Priority(enum.IntEnum):
    HIGH = 0
    NORMAL = 1
    LOW = 2


class LoadState(enum.StrEnum):
    """Milvus's load states."""

    NOT_EXIST = "LoadStateNotExist"
    NOT_LOAD = "LoadStateNotLoad"
    LOADING = "LoadStateLoading"
    LOADED = "LoadStateLoaded"


class QueryWorker:
    """An in-process query node: loaded segment views by (collection, segment id), served channels."""

    def __init__(self, worker_id: int, max_concurrent: int) -> None:
        self.id = worker_id
        self.max_concurrent = max_concurrent
        self.running = 0
        self.segments: dict[tuple[str, int], SegmentView] = {}
        self.channels: set[str] = set()

    def segment_ids(self, collection: str) -> list[int]:
        return sorted(sid for name, sid in self.segments if name == collection)


@dataclass(eq=False, slots=True)
class CoordTask:
    key: Hashable
    priority: Priority
    seq: int
    fn: Callable[[QueryWorker], Any]
    worker_id: int | None
    future: Future[Any] = field(default_factory=Future)

    def order(self) -> tuple[int, int]:
        return (int(self.priority), self.seq)


class QueryCoordinator:
    """Schedules coordination tasks onto query workers. Thread-safe; `close` stops it."""

    def __init__(self, *, workers: int = 2, per_worker_concurrency: int = 2) -> None:
        if workers < 1 or per_worker_concurrency < 1:
            raise ValueError("need at least one worker and one slot per worker")
        self.workers = [QueryWorker(i, per_worker_concurrency) for i in range(workers)]
        self._cond = threading.Condition()
        self._queued: list[CoordTask] = []  # sorted by (priority, seq)
        self._pending: dict[Hashable, CoordTask] = {}  # queued or running, by key
        self._seq = itertools.count()
        self._states: dict[str, LoadState] = {}
        self._stopping = False
        self._pool = ThreadPoolExecutor(workers * per_worker_concurrency, thread_name_prefix="vectordb-querynode")
        self._thread = threading.Thread(target=self._loop, name="vectordb-querycoord", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------- scheduling

    def submit(
        self,
        key: Hashable,
        fn: Callable[[QueryWorker], Any],
        priority: Priority = Priority.NORMAL,
        *,
        worker_id: int | None = None,
    ) -> Future[Any]:
        """Run `fn(worker)` on `worker_id` (or the least loaded worker with a free slot).

        A task with the same key still queued or running is joined instead of run twice.
        """
        with self._cond:
            if self._stopping:
                raise EngineClosed("the query coordinator is closed")
            existing = self._pending.get(key)
            if existing is not None:
                if priority < existing.priority and existing in self._queued:
                    self._queued.remove(existing)
                    existing.priority = priority
                    bisect.insort(self._queued, existing, key=CoordTask.order)
                    self._cond.notify_all()
                return existing.future
            task = CoordTask(key, priority, next(self._seq), fn, worker_id)
            self._pending[key] = task
            bisect.insort(self._queued, task, key=CoordTask.order)
            self._cond.notify_all()
            return task.future

    def close(self) -> None:
        """Finish queued tasks, then stop. Idempotent."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _loop(self) -> None:
        with self._cond:
            while True:
                picked = self._pick()
                if picked is None:
                    if self._stopping and not self._queued:
                        return
                    self._cond.wait()
                    continue
                task, worker = picked
                self._queued.remove(task)
                worker.running += 1
                self._pool.submit(self._run, task, worker)

    def _pick(self) -> tuple[CoordTask, QueryWorker] | None:
        """The most urgent queued task that has a worker with a free slot."""
        for task in self._queued:
            if task.worker_id is not None:
                worker = self.workers[task.worker_id]
                if worker.running < worker.max_concurrent:
                    return task, worker
                continue
            free = [w for w in self.workers if w.running < w.max_concurrent]
            if free:
                return task, min(free, key=lambda w: (len(w.segments), w.running, w.id))
        return None

    def _run(self, task: CoordTask, worker: QueryWorker) -> None:
        try:
            result = task.fn(worker)
        except BaseException as e:  # the task boundary: recorded on the future for its waiters
            self._finish(task, worker)
            task.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            self._finish(task, worker)
            task.future.set_result(result)

    def _finish(self, task: CoordTask, worker: QueryWorker) -> None:
        with self._cond:
            worker.running -= 1
            if self._pending.get(task.key) is task:
                del self._pending[task.key]
            self._cond.notify_all()

    # ---------------------------------------------------------------------------------- load state

    def state(self, name: str) -> LoadState:
        with self._cond:
            return self._states.get(name, LoadState.NOT_EXIST)

    def check_loaded(self, name: str) -> None:
        """Raise CollectionNotLoaded unless `name` is loaded (unknown names pass: the caller reports them)."""
        state = self.state(name)
        if state in (LoadState.NOT_LOAD, LoadState.LOADING):
            raise CollectionNotLoaded(f"collection {name!r} is not loaded; call load_collection first")

    def load_collection(self, name: str, sealed: Mapping[int, Segment]) -> Future[None]:
        """Load the channel and every segment in `sealed` (HIGH priority); resolves when all are loaded."""
        with self._cond:
            if self._states.get(name) is not LoadState.LOADED:
                self._states[name] = LoadState.LOADING
        parts = [self.submit(("channel", name), lambda w: self._watch(name, w), Priority.HIGH)]
        parts += [self._load_segment(name, seg, Priority.HIGH) for seg in sealed.values()]
        loaded: Future[None] = Future()

        def settle_state(f: Future[None]) -> None:
            with self._cond:
                if self._states.get(name) is LoadState.LOADING:
                    self._states[name] = LoadState.NOT_LOAD if f.exception() is not None else LoadState.LOADED
            _settle(loaded, f)  # after the state change: a waiter that wakes up sees LOADED

        _all_of(parts).add_done_callback(settle_state)
        return loaded

    def release_collection(self, name: str) -> Future[None]:
        """Mark `name` not loaded at once, then drop its segments and channel from every worker (HIGH)."""
        with self._cond:
            if name in self._states:
                self._states[name] = LoadState.NOT_LOAD
        parts = [
            self.submit(("release", name, w.id), lambda w: self._drop(name, None, w), Priority.HIGH, worker_id=w.id)
            for w in self.workers
        ]
        return _all_of(parts)

    def forget(self, name: str) -> None:
        """The collection was dropped: forget its state and what workers hold of it."""
        with self._cond:
            self._states.pop(name, None)
            for w in self.workers:
                _drop_holdings(w, name, None)

    def sync(self, name: str, sealed: Mapping[int, Segment], priority: Priority = Priority.NORMAL) -> Future[None]:
        """Bring the workers in line with `sealed`: hand off new segments, release ones gone.

        NORMAL after a flush (hand-off), LOW after a compaction (swap). A released collection is left alone.
        """
        if self.state(name) is not LoadState.LOADED:
            return _all_of([])
        with self._cond:
            held = {sid: w.id for w in self.workers for (n, sid) in w.segments if n == name}
        parts = [self._load_segment(name, seg, priority) for sid, seg in sealed.items() if sid not in held]
        load_all = _all_of(parts)
        gone = [sid for sid in held if sid not in sealed]
        if not gone:
            return load_all
        # Drop the replaced segments only after their replacements are loaded (a compaction's swap).
        result: Future[None] = Future()

        def then_drop(_: Future[Any]) -> None:
            drops = [
                self.submit(("drop", name, sid), partial(self._drop, name, {sid}), priority, worker_id=held[sid])
                for sid in gone
            ]
            _all_of(drops).add_done_callback(lambda f: _settle(result, f))

        load_all.add_done_callback(then_drop)
        return result

    def balance(self) -> Future[Any] | None:
        """Move one segment from the busiest to the idlest worker when they differ by more than one (LOW)."""
        with self._cond:
            heavy = max(self.workers, key=lambda w: len(w.segments))
            light = min(self.workers, key=lambda w: len(w.segments))
            if len(heavy.segments) - len(light.segments) <= 1:
                return None
            key = next(iter(heavy.segments))
        return self.submit(("balance", key), lambda w: self._move(key, heavy, w), Priority.LOW, worker_id=light.id)

    def distribution(self, name: str) -> dict[int, list[int]]:
        """Segment ids of `name` held by each worker."""
        with self._cond:
            return {w.id: w.segment_ids(name) for w in self.workers}

    # ------------------------------------------------------------------------------ worker actions

    def _load_segment(self, name: str, seg: Segment, priority: Priority) -> Future[Any]:
        return self.submit(("load", name, seg.id), lambda w: self._hold(name, seg, w), priority)

    def _hold(self, name: str, seg: Segment, worker: QueryWorker) -> None:
        view = seg.view()  # what a query node keeps: the arrays and index of the segment
        with self._cond:
            if self._states.get(name) in (None, LoadState.NOT_LOAD):
                return  # released (or dropped) while this load waited
            if any((name, seg.id) in w.segments for w in self.workers):
                return
            worker.segments[(name, seg.id)] = view

    def _watch(self, name: str, worker: QueryWorker) -> None:
        with self._cond:
            if not any(name in w.channels for w in self.workers):
                worker.channels.add(name)

    def _drop(self, name: str, seg_ids: set[int] | None, worker: QueryWorker) -> None:
        with self._cond:
            _drop_holdings(worker, name, seg_ids)

    def _move(self, key: tuple[str, int], source: QueryWorker, target: QueryWorker) -> None:
        with self._cond:
            view = source.segments.pop(key, None)
            if view is not None:
                target.segments[key] = view


def _drop_holdings(worker: QueryWorker, name: str, seg_ids: set[int] | None) -> None:
    for key in [k for k in worker.segments if k[0] == name and (seg_ids is None or k[1] in seg_ids)]:
        del worker.segments[key]
    if seg_ids is None:
        worker.channels.discard(name)


def _settle(target: Future[None], source: Future[Any]) -> None:
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(None)


def _all_of(parts: list[Future[Any]]) -> Future[None]:
    """A future resolved when every part is (with the first error, if any)."""
    done: Future[None] = Future()
    if not parts:
        done.set_result(None)
        return done
    remaining = [len(parts)]
    lock = threading.Lock()

    def part_done(f: Future[Any]) -> None:
        with lock:
            remaining[0] -= 1
            exc = f.exception()
            if exc is not None and not done.done():
                done.set_exception(exc)
            elif remaining[0] == 0 and not done.done():
                done.set_result(None)

    for p in parts:
        p.add_done_callback(part_done)
    return done
