"""Helpers for worker tests: run an in-process worker until tasks settle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from common.db import TaskRecord
from common.runtime import Core
from worker.consumer import Worker

TERMINAL = ("done", "failed", "cancelled")


@asynccontextmanager
async def running_worker(core: Core, vectors: Any, **kwargs: Any) -> AsyncIterator[Worker]:
    worker = Worker(core, vectors, **kwargs)
    runner = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(runner, timeout=30)


async def wait_for_status(core: Core, task_id: str, statuses: tuple[str, ...] = TERMINAL,
                          timeout_s: float = 60.0) -> TaskRecord:
    async with asyncio.timeout(timeout_s):
        while True:
            task = await asyncio.to_thread(core.repo.tasks.get, task_id)
            if task.status in statuses:
                return task
            await asyncio.sleep(0.05)
