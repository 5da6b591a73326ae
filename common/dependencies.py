"""The services docvec depends on, which of them an exception says is down, and outages.

Each client raises `DependencyUnavailable(<name>, ...)` at its own boundary when its service is
unreachable, times out or answers 5xx (the vector-store client through `ChunkStore`, the object stores,
the OpenAI-compatible embedder, the database through `Repository`). Redis errors come from redis-py
everywhere Redis is used, so they are recognised here by type instead of being wrapped at every call.

`DependencyBoard` keeps the outages one process has seen: since when, the last error. In a worker, a
task that meets an unavailable dependency reports it and waits in place — its entry stays in flight and
is renewed, its deadline is paused, its attempts are untouched — while one probe loop checks the
dependency every `worker.dependency_probe_s` with a cheap call; the consumer takes no new work while
anything is down, and the heartbeat publishes `snapshot()` (dashboard, `/api/v1/fleet`, `docvec status`).
The API keeps one for `/readyz`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from redis import exceptions as redis_errors

from common.errors import DependencyUnavailable


class Dependency(enum.StrEnum):
    REDIS = "redis"
    DATABASE = "database"
    OBJECT_STORE = "object_store"
    VECTOR_STORE = "vector_store"
    EMBEDDING = "embedding"


log = logging.getLogger(__name__)

_REDIS_DOWN = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError,
               redis_errors.TryAgainError, redis_errors.ClusterDownError)


def dependency_of(exc: BaseException) -> Dependency | None:
    """The dependency whose unavailability `exc` reports, or None when it is not such an error."""
    if isinstance(exc, DependencyUnavailable):
        try:
            return Dependency(exc.dependency)
        except ValueError:
            return None
    if isinstance(exc, _REDIS_DOWN):
        return Dependency.REDIS
    return None


Probe = Callable[[], Awaitable[object]]
PROBE_TIMEOUT_S = 5.0


async def run_probe(probe: Probe, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Run one probe; None when it answered, else what went wrong."""
    try:
        async with asyncio.timeout(timeout_s):
            await probe()
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except Exception as exc:  # the probe's whole point: any failure means "still down"
        return f"{type(exc).__name__}: {exc}"[:500]
    return None


@dataclass(slots=True)
class Outage:
    """A dependency seen down: since when (unix seconds), the last error, probes tried."""

    since: float
    error: str
    probes: int = 0


class DependencyBoard:
    """Outages of one process's dependencies; `probe_loop` (or a caller's own check, `up`) ends them."""

    def __init__(self, probes: Mapping[Dependency, Probe], *, probe_interval_s: float) -> None:
        self._probes = dict(probes)
        self._interval_s = probe_interval_s
        self._outages: dict[Dependency, Outage] = {}
        self._changed = asyncio.Event()  # set whenever an outage starts or ends

    def down(self, dependency: Dependency, error: BaseException | str) -> None:
        """Record that `dependency` failed (the first report starts the outage)."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        outage = self._outages.get(dependency)
        if outage is None:
            self._outages[dependency] = Outage(since=time.time(), error=text[:500])
            log.warning("%s is unavailable: %s", dependency, text[:300])
            self._changed.set()
        else:
            outage.error = text[:500]

    def up(self, dependency: Dependency) -> None:
        """`dependency` answered again: its outage (if any) ends."""
        outage = self._outages.pop(dependency, None)
        if outage is not None:
            log.warning("%s is back after %.1fs", dependency, time.time() - outage.since)
            self._changed.set()

    def outage(self, dependency: Dependency) -> Outage | None:
        return self._outages.get(dependency)

    def is_down(self, dependency: Dependency) -> bool:
        return dependency in self._outages

    @property
    def any_down(self) -> bool:
        return bool(self._outages)

    async def wait_up(self, dependency: Dependency, timeout_s: float | None = None) -> bool:
        """Wait until `dependency` is up (True) or `timeout_s` passed (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while dependency in self._outages:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return dependency not in self._outages
        return True

    async def wait_any_change(self, timeout_s: float) -> None:
        """Sleep until an outage starts or ends, at most `timeout_s` (the consumer's idle wait)."""
        self._changed.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            return

    async def probe_once(self) -> None:
        """Probe every dependency that is down; end the outages whose probe succeeds."""
        for dependency, outage in list(self._outages.items()):
            probe = self._probes.get(dependency)
            outage.probes += 1
            if probe is not None:
                error = await run_probe(probe)
                if error is not None:
                    outage.error = error
                    continue
            self.up(dependency)

    async def probe_loop(self, stopped: asyncio.Event) -> None:
        """Probe what is down every `probe_interval_s` until `stopped`."""
        while not stopped.is_set():
            if self._outages:
                await self.probe_once()
            wait_s = self._interval_s if self._outages else max(self._interval_s, 1.0)
            try:
                async with asyncio.timeout(wait_s):
                    await stopped.wait()
            except TimeoutError:
                continue

    def snapshot(self) -> dict[str, dict[str, object]]:
        """{dependency: {since, error, probes}} for the heartbeat record."""
        return {str(d): {"since": o.since, "error": o.error, "probes": o.probes} for d, o in self._outages.items()}
