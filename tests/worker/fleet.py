"""The process fleet for reliability tests: `bench.fleet.ProcessFleet` with test settings and
`tests.worker.fake_worker` processes (a fast embedder with an optional per-batch delay)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet import ProcessFleet
from common.runtime import Core
from common.settings import Settings

FAKE_WORKER = (sys.executable, "-m", "tests.worker.fake_worker")

TEST_WORKER_SETTINGS: dict[str, Any] = {
    "heartbeat_interval_s": 0.3, "heartbeat_timeout_s": 2.0, "block_ms": 100, "retry_backoff_s": 0.1,
    "janitor_interval_s": 0.5, "orphan_grace_s": 1.0, "orphan_scan_interval_s": 2.0,
    "claim_idle_s": 30.0, "shutdown_grace_s": 10.0,
}


@dataclass
class Fleet:
    tmp: Path
    redis_url: str
    worker_env: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"fleet{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.processes = ProcessFleet(workdir=self.tmp, redis_url=self.redis_url, prefix=self.prefix,
                                      worker_command=FAKE_WORKER)

    @property
    def vectordb_url(self) -> str:
        return self.processes.vectordb_url

    @property
    def workers(self) -> dict[str, Any]:
        return self.processes.workers

    def worker_settings(self) -> dict[str, Any]:
        merged = dict(TEST_WORKER_SETTINGS)
        merged.update({k.lower(): v for k, v in self.worker_env.items()})
        return merged

    def settings(self) -> Settings:
        return Settings(data_dir=str(self.processes.data_dir), redis={"url": self.redis_url, "prefix": self.prefix},
                        vectordb={"uri": self.vectordb_url}, chunking={"chunk_tokens": 64, "overlap_tokens": 8},
                        worker=self.worker_settings())

    def start_server(self) -> None:
        self.processes.start_server()

    def start_worker(self, consumer: str, *, embed_delay_s: float = 0.0, concurrency: int = 2) -> None:
        env = {f"DOCVEC_WORKER__{k.upper()}": str(v) for k, v in self.worker_settings().items()}
        env.update({"DOCVEC_CHUNKING__CHUNK_TOKENS": "64", "DOCVEC_CHUNKING__OVERLAP_TOKENS": "8",
                    "DOCVEC_EMBEDDING__BATCH_SIZE": "4", "DOCVEC_TEST_EMBED_DELAY_S": str(embed_delay_s)})
        self.processes.start_worker(consumer, "--concurrency", str(concurrency), extra_env=env)

    def kill(self, consumer: str) -> None:
        self.processes.kill(consumer)

    def terminate(self, consumer: str) -> int:
        return self.processes.terminate(consumer)

    def check_alive(self) -> None:
        for name, code in self.processes.dead_workers().items():
            raise AssertionError(f"worker {name} exited with {code}:\n{self.processes.tail(f'worker-{name}.log')}")

    def stop(self) -> None:
        self.processes.stop()


async def wait_until(predicate: Callable[[], Awaitable[Any]], timeout_s: float, what: str,
                     fleet: Fleet | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fleet is not None:
            fleet.check_alive()
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def all_terminal(core: Core, task_ids: list[str]) -> bool:
    for task_id in task_ids:
        task = await asyncio.to_thread(core.repo.tasks.get, task_id)
        if task.status not in ("done", "failed", "cancelled"):
            return False
    return True
