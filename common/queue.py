"""The task queue on Redis Streams: enqueue, consumer-group reads, ack, renew, dead-letter.

A stream entry carries only `{task_id}`; the task's state lives in the database. Entries are acked
and deleted together once a task reaches a terminal state, so a stream's length is the number of
tasks not yet finished.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

from common.keys import Keys

TASK_ID_FIELD = "task_id"
CLAIM_MIN_IDLE_MS = 1000

# XACK + XDEL of entries of one stream in one atomic step. A script rather than MULTI/EXEC: it is atomic
# on a single server and on a Redis Cluster alike (redis-py's async cluster client has no transactions).
# Sent with EVAL (the server caches it by its hash): EVALSHA in a pipeline costs a SCRIPT EXISTS first.
_ACK_SCRIPT = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""

# XREADGROUP of new entries from the streams KEYS in order (high priority first), up to ARGV[3] in all,
# as one flat list of (stream, entry id, task id) triples; an entry whose fields were deleted gets an
# empty task id. One round trip instead of one per stream (a script cannot block: the caller blocks).
_READ_NEW_SCRIPT = """
local out = {}
local left = tonumber(ARGV[3])
for i = 1, #KEYS do
  if left <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', KEYS[i], '>')
  if reply then
    local entries = reply[1][2]
    for _, entry in ipairs(entries) do
      local task_id = ''
      local fields = entry[2]
      if fields then
        for j = 1, #fields, 2 do
          if fields[j] == ARGV[4] then task_id = fields[j + 1] end
        end
      end
      out[#out + 1] = KEYS[i]
      out[#out + 1] = entry[1]
      out[#out + 1] = task_id
    end
    left = left - #entries
  end
end
return out
"""

# The entry ids of ARGV that are no longer in the stream KEYS[1].
_MISSING_ENTRIES_SCRIPT = """
local missing = {}
for i = 1, #ARGV do
  if #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1) == 0 then
    missing[#missing + 1] = ARGV[i]
  end
end
return missing
"""


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One delivered stream entry."""

    stream: str
    entry_id: str
    task_id: str


class TaskQueue:
    """Stream operations for one deployment (`keys`) on one Redis connection."""

    def __init__(self, redis: Redis | RedisCluster, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    @property
    def keys(self) -> Keys:
        return self._keys

    async def ensure_groups(self) -> None:
        """Create the consumer group on every task stream (and the stream itself) if missing."""
        for stream in self._keys.streams:
            try:
                await self._redis.xgroup_create(stream, self._keys.group, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                # BUSYGROUP is Redis's error code for "group already exists": the wanted state.
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    async def enqueue(self, task_id: str, priority: str = "normal") -> str:
        """XADD the task to its priority stream; returns the stream entry id."""
        entry_id = await self._redis.xadd(self._keys.stream_for(priority), {TASK_ID_FIELD: task_id})
        return str(entry_id)

    async def read_own_pending(self, consumer: str, count: int) -> list[QueueMessage]:
        """Entries delivered to `consumer` and not yet acked (replay after a restart), oldest first."""
        if count <= 0:
            return []
        reply = await self._redis.xreadgroup(
            self._keys.group, consumer, {s: "0" for s in self._keys.streams}, count=count
        )
        return _messages(reply)

    async def read_new(self, consumer: str, count: int, block_ms: int) -> list[QueueMessage]:
        """Up to `count` never-delivered entries, high priority first; when there are none, blocks on the
        normal stream for up to `block_ms`."""
        if count <= 0:
            return []
        keys = self._keys
        flat = await self._redis.eval(_READ_NEW_SCRIPT, len(keys.streams), *keys.streams, keys.group, consumer,
                                      count, TASK_ID_FIELD)
        if flat:
            return [QueueMessage(stream=str(flat[i]), entry_id=str(flat[i + 1]), task_id=str(flat[i + 2]))
                    for i in range(0, len(flat), 3)]
        return _messages(await self._redis.xreadgroup(
            keys.group, consumer, {keys.stream_normal: ">"}, count=count, block=block_ms
        ))

    async def ack(self, message: QueueMessage) -> None:
        """Ack and delete the entry: the task is finished for good."""
        async with self._redis.pipeline(transaction=False) as pipe:
            self.add_ack(pipe, [message])
            await pipe.execute()

    def add_ack(self, pipe: Pipeline | ClusterPipeline, messages: Sequence[QueueMessage]) -> None:
        """Add the ack and delete of `messages` to `pipe` (one atomic script call per stream)."""
        by_stream: dict[str, list[str]] = {}
        for message in messages:
            by_stream.setdefault(message.stream, []).append(message.entry_id)
        for stream, ids in by_stream.items():
            pipe.eval(_ACK_SCRIPT, 1, stream, self._keys.group, *ids)

    async def renew(self, consumer: str, messages: list[QueueMessage]) -> None:
        """Reset the idle time of in-flight entries so idle-based reclaim never steals them."""
        by_stream: dict[str, list[str]] = {}
        for message in messages:
            by_stream.setdefault(message.stream, []).append(message.entry_id)
        for stream, ids in by_stream.items():
            await self._redis.xclaim(stream, self._keys.group, consumer, 0, ids, justid=True)

    async def dead_letter(self, message: QueueMessage, reason: str) -> None:
        """Copy the entry to the dead-letter stream, then ack it."""
        await self._redis.xadd(
            self._keys.dead_letter,
            {
                TASK_ID_FIELD: message.task_id,
                "stream": message.stream,
                "entry_id": message.entry_id,
                "reason": reason,
                "at": f"{time.time():.3f}",
            },
        )
        await self.ack(message)


    async def consumers(self) -> dict[str, ConsumerInfo]:
        """Every consumer of the group across the task streams, with its pending count."""
        found: dict[str, ConsumerInfo] = {}
        for stream in self._keys.streams:
            try:
                rows = await self._redis.xinfo_consumers(stream, self._keys.group)
            except redis_errors.ResponseError as exc:
                if str(exc).startswith("NOGROUP"):  # stream or group not created yet
                    continue
                raise
            for row in rows:
                name = str(row["name"])
                seen = found.get(name)
                pending = int(row["pending"]) + (seen.pending if seen else 0)
                idle_ms = min(int(row["idle"]), seen.idle_ms) if seen else int(row["idle"])
                found[name] = ConsumerInfo(name=name, pending=pending, idle_ms=idle_ms)
        return found

    async def claim_from(self, dead_consumer: str, consumer: str, count: int,
                         min_idle_ms: int = CLAIM_MIN_IDLE_MS) -> list[QueueMessage]:
        """Move up to `count` of a dead consumer's pending entries to `consumer`.

        XCLAIM's idle check makes the move atomic: when two live workers race for one entry, the
        first claim resets its idle time and the second claim skips it.
        """
        claimed: list[QueueMessage] = []
        for stream in self._keys.streams:
            if len(claimed) >= count:
                break
            pending = await self._redis.xpending_range(
                stream, self._keys.group, "-", "+", count - len(claimed), consumername=dead_consumer
            )
            ids = [p["message_id"] for p in pending]
            if ids:
                reply = await self._redis.xclaim(stream, self._keys.group, consumer, min_idle_ms, ids)
                claimed.extend(_entries(stream, reply))
        return claimed

    async def autoclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[QueueMessage]:
        """Claim entries idle longer than `min_idle_ms`, whoever holds them (the fallback)."""
        claimed: list[QueueMessage] = []
        for stream in self._keys.streams:
            if len(claimed) >= count:
                break
            reply = await self._redis.xautoclaim(
                stream, self._keys.group, consumer, min_idle_ms, "0-0", count=count - len(claimed)
            )
            claimed.extend(_entries(stream, reply[1]))
        return claimed

    async def delete_consumer(self, consumer: str) -> None:
        """Remove a consumer from the group on every stream (callers check it has nothing pending)."""
        for stream in self._keys.streams:
            await self._redis.xgroup_delconsumer(stream, self._keys.group, consumer)

    async def entry_exists(self, priority: str, entry_id: str) -> bool:
        return (await self.entries_exist([(priority, entry_id)]))[0]

    async def entries_exist(self, entries: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each (priority, entry id) is still in its stream (one script call per stream)."""
        by_stream: dict[str, list[str]] = {}
        for priority, entry_id in entries:
            by_stream.setdefault(self._keys.stream_for(priority), []).append(entry_id)
        missing: set[tuple[str, str]] = set()
        for stream, ids in by_stream.items():
            gone = await self._redis.eval(_MISSING_ENTRIES_SCRIPT, 1, stream, *ids)
            missing.update((stream, str(entry_id)) for entry_id in gone)
        return [(self._keys.stream_for(priority), entry_id) not in missing for priority, entry_id in entries]


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


def _entries(stream: str, entries: Any) -> list[QueueMessage]:
    out: list[QueueMessage] = []
    for entry in entries or []:
        if not entry:
            continue
        entry_id, fields = entry
        out.append(QueueMessage(stream=stream, entry_id=str(entry_id),
                                task_id=str((fields or {}).get(TASK_ID_FIELD, ""))))
    return out


def _messages(reply: Any) -> list[QueueMessage]:
    """Flatten an XREADGROUP reply. Entries whose payload was deleted (nil fields) are kept with an
    empty task id so that the caller can ack them away."""
    messages: list[QueueMessage] = []
    if not reply:
        return messages
    items = reply.items() if isinstance(reply, dict) else reply
    for stream, entries in items:
        messages.extend(_entries(str(stream), entries))
    return messages
