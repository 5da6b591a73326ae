"""Who is alive: heartbeats in the `docvec:workers` sorted set, scored with Redis server time
(so hosts with skewed clocks agree)."""

from __future__ import annotations

from redis.asyncio import Redis

from common.keys import Keys


async def redis_now_s(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return float(seconds) + float(micros) / 1_000_000


async def live_consumers(redis: Redis, keys: Keys, timeout_s: float) -> set[str]:
    """Consumers whose last heartbeat is newer than `timeout_s`."""
    now = await redis_now_s(redis)
    return set(await redis.zrangebyscore(keys.workers, now - timeout_s, "+inf"))


async def expired_workers(redis: Redis, keys: Keys, timeout_s: float) -> list[str]:
    """Workers still registered whose heartbeat is older than `timeout_s`."""
    now = await redis_now_s(redis)
    return list(await redis.zrangebyscore(keys.workers, "-inf", f"({now - timeout_s}"))
