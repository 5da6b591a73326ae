"""Progress reporting and cancellation checks for one running task."""

from __future__ import annotations

import asyncio
import json
import time

from redis.asyncio import Redis

from common.db import Repository
from common.errors import Cancelled
from common.keys import Keys
from common.redisconn import is_cluster


class TaskProgress:
    """Writes a task's progress to the DB (fenced by task version) and publishes it for live views.

    A fenced-out write means the task was cancelled or superseded while running: it raises
    `Cancelled`, so the worker stops writing at once.
    """

    def __init__(self, *, repo: Repository, redis: Redis, keys: Keys, task_id: str, version: int,
                 consumer: str) -> None:
        self._repo = repo
        self._redis = redis
        self._keys = keys
        self.task_id = task_id
        self.version = version
        self.consumer = consumer
        self.stage: str | None = None
        self.progress = 0.0
        self.timings: dict[str, float] = {}  # this attempt's stage timings, written with the next report
        self._timings_written = 0

    async def report(self, progress: float, message: str | None = None, *, stage: str | None = None) -> None:
        progress = min(max(progress, 0.0), 1.0)
        if stage is not None:
            self.stage = stage
        self.progress = progress
        timings = dict(self.timings) if len(self.timings) != self._timings_written else None
        written = await asyncio.to_thread(
            self._repo.append_progress, self.task_id, self.version,
            progress=progress, message=message, stage=stage, stage_timings=timings,
        )
        if not written:
            raise Cancelled(f"task {self.task_id} was cancelled or superseded")
        if timings is not None:
            self._timings_written = len(timings)
        await self.publish("progress", message=message)

    def record_timing(self, stage: str, seconds: float) -> None:
        """Note how long `stage` took; it reaches the DB with the next report (or completion)."""
        self.timings[stage] = seconds

    async def publish(self, event: str, *, message: str | None = None, status: str | None = None) -> None:
        payload = json.dumps({
            "event": event,
            "task_id": self.task_id,
            "stage": self.stage,
            "progress": round(self.progress, 4),
            "message": message,
            "status": status,
            "worker": self.consumer,
            "at": time.time(),
        })
        channels = (self._keys.task_events(self.task_id), self._keys.all_events)
        if is_cluster(self._redis):  # redis-py's cluster pipeline refuses PUBLISH
            for channel in channels:
                await self._redis.publish(channel, payload)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.publish(channel, payload)
            await pipe.execute()

    async def check_cancelled(self) -> None:
        """Raise `Cancelled` if the API has flagged this task."""
        if await self._redis.exists(self._keys.cancel(self.task_id)):
            raise Cancelled(f"task {self.task_id} was cancelled")
