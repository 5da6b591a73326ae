"""The task queue on Redis Streams: enqueue, consumer-group reads, ack, renew, dead-letter.

A stream entry carries only `{task_id}`; the task's state lives in the database. Entries are acked
and deleted together once a task reaches a terminal state, so a stream's length is the number of
tasks not yet finished.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

from common.keys import Keys
from common.redisconn import error_code

TASK_ID_FIELD = "task_id"
CLAIM_MIN_IDLE_MS = 1000

# XACK + XDEL of entries of one stream in one atomic step. A script rather than MULTI/EXEC: it is atomic
# on a single server and on a Redis Cluster alike (redis-py's async cluster client has no transactions).
# Sent with EVAL (the server caches it by its hash): EVALSHA in a pipeline costs a SCRIPT EXISTS first.
# XACK fails only when the group is gone (Redis came back empty): the entry then has no group to be
# acked in, and is deleted all the same (pcall: that error must not fail the other signals of the round).
_ACK_SCRIPT = """
redis.pcall('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
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

# The state of each entry id ARGV[2..] of stream KEYS[1] for group ARGV[1]: 0 gone, 1 live (pending in
# some consumer's list, or not delivered yet), 2 stranded (delivered, yet in no pending list: its consumer
# was deleted while it held it, so nobody will ever run or ack it).
_ENTRY_STATES_SCRIPT = """
local function after(a, b)  -- stream id a > b
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local last = '0-0'
for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
  if fields['name'] == ARGV[1] then last = fields['last-delivered-id'] end
end
local states = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if #redis.call('XRANGE', KEYS[1], id, id, 'COUNT', 1) == 0 then
    states[#states + 1] = 0
  elseif after(id, last) or #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1) > 0 then
    states[#states + 1] = 1
  else
    states[#states + 1] = 2
  end
end
return states
"""

# Delete consumer ARGV[2] of group ARGV[1] from every stream KEYS, only if it holds no pending entry in
# any of them: checked and done in one atomic step, so entries it reads meanwhile are never stranded.
_DELETE_IDLE_CONSUMER_SCRIPT = """
for i = 1, #KEYS do
  if #redis.call('XPENDING', KEYS[i], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
end
for i = 1, #KEYS do redis.call('XGROUP', 'DELCONSUMER', KEYS[i], ARGV[1], ARGV[2]) end
return 1
"""


class EntryState(enum.IntEnum):
    GONE = 0
    LIVE = 1
    STRANDED = 2


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
                if error_code(exc) != "BUSYGROUP":
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
        by_stream: dict[str, list[Any]] = {}
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
                if error_code(exc) == "NOGROUP":  # the group not created yet
                    continue
                if not await self._redis.exists(stream):  # the stream is gone (a Redis that restarted empty)
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
            ids: list[Any] = [p["message_id"] for p in pending]
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

    async def delete_idle_consumer(self, consumer: str) -> bool:
        """Remove a consumer from the group on every stream if, at that moment, it holds no pending entry
        (one atomic step); False when it holds some (it is alive after all, or its entries are not claimed)."""
        streams = self._keys.streams
        return bool(await self._redis.eval(_DELETE_IDLE_CONSUMER_SCRIPT, len(streams), *streams, self._keys.group,
                                           consumer))

    async def entry_state(self, priority: str, entry_id: str) -> EntryState:
        return (await self.entry_states([(priority, entry_id)]))[0]

    async def entry_states(self, entries: Sequence[tuple[str, str]]) -> list[EntryState]:
        """Whether each (priority, entry id) is gone, live or stranded (one script call per stream)."""
        by_stream: dict[str, list[str]] = {}
        for priority, entry_id in entries:
            by_stream.setdefault(self._keys.stream_for(priority), []).append(entry_id)
        states: dict[tuple[str, str], EntryState] = {}
        for stream, ids in by_stream.items():
            replies = await self._redis.eval(_ENTRY_STATES_SCRIPT, 1, stream, self._keys.group, *ids)
            states.update(((stream, entry_id), EntryState(int(r))) for entry_id, r in zip(ids, replies, strict=True))
        return [states[(self._keys.stream_for(priority), entry_id)] for priority, entry_id in entries]

    async def delete_entry(self, priority: str, entry_id: str) -> None:
        """XDEL one entry (a stranded one that was enqueued again)."""
        await self._redis.xdel(self._keys.stream_for(priority), entry_id)


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
