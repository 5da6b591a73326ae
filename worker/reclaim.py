"""Reclaim: take over the pending entries of dead consumers (and, as a fallback, of any entry idle
longer than `worker.claim_idle_s`), never more than the free task slots."""

from __future__ import annotations

import logging

from common.queue import QueueMessage
from common.runtime import Core
from worker.liveness import live_consumers

log = logging.getLogger(__name__)


class Reclaimer:
    """Claims work stranded by dead consumers for `consumer`."""

    def __init__(self, core: Core, consumer: str) -> None:
        self._core = core
        self._consumer = consumer

    async def dead_consumers_with_work(self) -> list[str]:
        """Group consumers with pending entries whose heartbeat expired (or who never had one)."""
        w = self._core.settings.worker
        alive = await live_consumers(self._core.redis, self._core.keys, w.heartbeat_timeout_s)
        consumers = await self._core.queue.consumers()
        return sorted(
            name for name, info in consumers.items()
            if info.pending > 0 and name != self._consumer and name not in alive
        )

    async def claim(self, free: int) -> list[QueueMessage]:
        if free <= 0:
            return []
        queue = self._core.queue
        claimed: list[QueueMessage] = []
        for dead in await self.dead_consumers_with_work():
            got = await queue.claim_from(dead, self._consumer, free - len(claimed))
            if got:
                log.info("%s claimed %d entries of dead consumer %s", self._consumer, len(got), dead)
            claimed.extend(got)
            if len(claimed) >= free:
                return claimed
        idle_ms = int(self._core.settings.worker.claim_idle_s * 1000)
        stale = await queue.autoclaim(self._consumer, idle_ms, free - len(claimed))
        if stale:
            log.info("%s claimed %d entries idle for over %d ms", self._consumer, len(stale), idle_ms)
        return claimed + stale
