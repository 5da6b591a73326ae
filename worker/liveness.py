"""Who is alive: heartbeats in the `docvec:workers` sorted set, scored with Redis server time
(so hosts with skewed clocks agree)."""

from __future__ import annotations

from common.keys import Keys
from common.redisconn import RedisClient


async def redis_now_s(redis: RedisClient) -> float:
    seconds, micros = await redis.time()
    return float(seconds) + float(micros) / 1_000_000


async def live_consumers(redis: RedisClient, keys: Keys, timeout_s: float) -> set[str]:
    """Consumers whose last heartbeat is newer than `timeout_s`."""
    now = await redis_now_s(redis)
    return {str(name) for name in await redis.zrangebyscore(keys.workers, now - timeout_s, "+inf")}


async def expired_workers(redis: RedisClient, keys: Keys, timeout_s: float) -> list[str]:
    """Workers still registered whose heartbeat is older than `timeout_s`."""
    now = await redis_now_s(redis)
    return [str(name) for name in await redis.zrangebyscore(keys.workers, "-inf", f"({now - timeout_s}")]
