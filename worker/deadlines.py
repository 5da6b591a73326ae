"""Task deadlines and stage timeouts, enforced by one sweeper per worker instead of a timer per stage.

`asyncio.timeout` schedules and cancels a timer on the event loop each time it is entered; with a task
deadline and a timeout per stage, that costs more than the rest of a short task's path. Here a running
task holds a `Watch` with two instants: the task's deadline and the end of its current stage. One
sweeper wakes every `tick_s` while any task is watched and cancels each task past either instant; the
task leaves its `async with` with `TimeoutError`, as with `asyncio.timeout`, and `Watch.expired_stage`
names the stage whose timeout it was (None for the task deadline). A timeout fires at most `tick_s` late.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from types import TracebackType

SWEEP_TICK_S = 0.1


class Watch:
    """One task's deadline and current stage timeout; use as `async with deadlines.watch(s) as watch`."""

    __slots__ = ("_deadlines", "_deadline_s", "_deadline", "_stage_end", "_task", "_cancelling", "stage",
                 "stage_timeout_s", "expired_stage", "fired")

    def __init__(self, deadlines: Deadlines, deadline_s: float) -> None:
        self._deadlines = deadlines
        self._deadline_s = deadline_s
        self._deadline = math.inf
        self._stage_end = math.inf
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self.stage: str | None = None
        self.stage_timeout_s = 0.0
        self.expired_stage: str | None = None
        self.fired = False

    async def __aenter__(self) -> Watch:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline watch must be used inside a task")
        self._task, self._cancelling = task, task.cancelling()
        self._deadline = asyncio.get_running_loop().time() + self._deadline_s
        self._deadlines._add(self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._deadlines._discard(self)
        # As asyncio.timeout does: the cancellation this watch caused becomes TimeoutError, any other
        # cancellation (the worker shutting down) stays one.
        if self.fired and exc_type is asyncio.CancelledError and self._task is not None:
            if self._task.uncancel() <= self._cancelling:
                raise TimeoutError("deadline exceeded") from exc

    def begin_stage(self, name: str, timeout_s: float) -> None:
        self.stage, self.stage_timeout_s = name, timeout_s
        self._stage_end = asyncio.get_running_loop().time() + timeout_s

    def end_stage(self) -> None:
        self.stage, self._stage_end = None, math.inf

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop both clocks meanwhile (a task waiting for a dependency to come back), then go on with
        the time that was left."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline_left, stage_left = self._deadline - now, self._stage_end - now
        self._deadline = self._stage_end = math.inf
        try:
            yield
        finally:
            now = loop.time()
            self._deadline = now + deadline_left
            self._stage_end = now + stage_left

    def _expire_if_due(self, now: float) -> None:
        # The sweeper runs while the watched task is suspended inside its `async with`, so the
        # cancellation is delivered there.
        if self.fired or self._task is None:
            return
        if now >= self._stage_end:
            self.expired_stage = self.stage
        elif now < self._deadline:
            return
        self.fired = True
        self._task.cancel()


class Deadlines:
    """The watches of one worker's running tasks and the sweeper that expires them."""

    def __init__(self, tick_s: float = SWEEP_TICK_S) -> None:
        self._tick_s = tick_s
        self._watches: set[Watch] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def watch(self, deadline_s: float) -> Watch:
        return Watch(self, deadline_s)

    def _add(self, watch: Watch) -> None:
        self._watches.add(watch)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="deadline-sweeper")

    def _discard(self, watch: Watch) -> None:
        self._watches.discard(watch)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._watches:
                await asyncio.sleep(self._tick_s)
                now = loop.time()
                for watch in list(self._watches):
                    watch._expire_if_due(now)
        finally:
            self._sweeper = None
