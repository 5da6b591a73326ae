"""The task queue on Redis Streams (common/queue.py) against the real redis-server of the test session: each
test has its own key prefix, with the consumer group already created by `open_core`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis import exceptions as redis_errors

from common.queue import EntryState, QueueMessage, TaskQueue
from common.runtime import Core

# Older than any claim threshold used below: set with XCLAIM's IDLE option, so no test waits for it.
LONG_IDLE_MS = 600_000


@pytest.fixture
def queue(core: Core) -> TaskQueue:
    return core.queue


async def _pending(core: Core, stream: str) -> list[dict[str, Any]]:
    return list(await core.redis.xpending_range(stream, core.keys.group, "-", "+", 100))


async def _age(core: Core, messages: list[QueueMessage], holder: str) -> None:
    """Make the entries look idle for `LONG_IDLE_MS` (as if `holder` had not touched them for that long)."""
    for m in messages:
        await core.redis.xclaim(m.stream, core.keys.group, holder, 0, [m.entry_id], idle=LONG_IDLE_MS, justid=True)


# ------------------------------------------------------------------------------------------ groups, enqueue


async def test_ensure_groups_creates_the_group_on_every_stream_and_can_run_again(core: Core,
                                                                                  queue: TaskQueue) -> None:
    for stream in core.keys.streams:
        await core.redis.delete(stream)
    await queue.ensure_groups()
    await queue.ensure_groups()  # BUSYGROUP: already there, the wanted state
    for stream in core.keys.streams:
        groups = await core.redis.xinfo_groups(stream)
        assert [g["name"] for g in groups] == [core.keys.group]


async def test_an_error_other_than_busygroup_is_not_swallowed(core: Core, queue: TaskQueue) -> None:
    await core.redis.delete(core.keys.stream_high)
    await core.redis.set(core.keys.stream_high, "not a stream")
    with pytest.raises(redis_errors.ResponseError):
        await queue.ensure_groups()


async def test_enqueue_adds_the_task_id_to_its_priority_stream(core: Core, queue: TaskQueue) -> None:
    normal = await queue.enqueue("t-normal")
    high = await queue.enqueue("t-high", "high")
    assert await core.redis.xrange(core.keys.stream_normal) == [(normal, {"task_id": "t-normal"})]
    assert await core.redis.xrange(core.keys.stream_high) == [(high, {"task_id": "t-high"})]
    with pytest.raises(ValueError, match="unknown priority"):
        await queue.enqueue("t", "urgent")


# ------------------------------------------------------------------------------------------------- reading


async def test_read_new_takes_high_priority_first_and_never_more_than_asked(queue: TaskQueue) -> None:
    for i in range(3):
        await queue.enqueue(f"n{i}")
    await queue.enqueue("h0", "high")
    await queue.enqueue("h1", "high")
    first = await queue.read_new("w1", 3, block_ms=10)
    assert [m.task_id for m in first] == ["h0", "h1", "n0"]
    rest = await queue.read_new("w2", 10, block_ms=10)
    assert [m.task_id for m in rest] == ["n1", "n2"], "an entry is delivered to one consumer"
    assert await queue.read_new("w1", 10, block_ms=10) == []
    assert all(isinstance(m, QueueMessage) and m.entry_id for m in first + rest)


async def test_read_new_with_no_free_slot_reads_nothing(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("t")
    assert await queue.read_new("w1", 0, block_ms=10) == []
    assert await queue.read_own_pending("w1", 0) == []
    assert (await core.redis.xpending(core.keys.stream_normal, core.keys.group))["pending"] == 0


async def test_own_pending_entries_are_read_oldest_first_up_to_count(queue: TaskQueue) -> None:
    for i in range(3):
        await queue.enqueue(f"n{i}")
    await queue.read_new("w1", 3, block_ms=10)
    assert [m.task_id for m in await queue.read_own_pending("w1", 2)] == ["n0", "n1"]


async def test_read_new_wakes_for_an_entry_added_while_it_blocks(core: Core, queue: TaskQueue) -> None:
    reading = asyncio.create_task(queue.read_new("w1", 5, block_ms=5_000))
    async with asyncio.timeout(5):  # until the reader is blocked on the normal stream
        while not (await core.redis.info("clients"))["blocked_clients"]:
            await asyncio.sleep(0.01)
    await queue.enqueue("late")
    messages = await asyncio.wait_for(reading, timeout=10)
    assert [m.task_id for m in messages] == ["late"]


async def test_own_pending_entries_are_read_again_until_acked(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("n0")
    await queue.enqueue("h0", "high")
    delivered = await queue.read_new("w1", 5, block_ms=10)
    assert [m.task_id for m in await queue.read_own_pending("w1", 5)] == ["h0", "n0"]
    assert await queue.read_own_pending("w2", 5) == [], "only the consumer's own"
    for message in delivered:
        await queue.ack(message)
    assert await queue.read_own_pending("w1", 5) == []


async def test_a_pending_entry_whose_payload_was_deleted_comes_back_without_a_task_id(
        core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("t")
    (message,) = await queue.read_new("w1", 1, block_ms=10)
    await core.redis.xdel(message.stream, message.entry_id)  # still in w1's pending list
    (replayed,) = await queue.read_own_pending("w1", 5)
    assert (replayed.entry_id, replayed.task_id) == (message.entry_id, "")
    await queue.ack(replayed)
    assert await queue.read_own_pending("w1", 5) == []


# -------------------------------------------------------------------------------------------- ack, renew


async def test_ack_removes_the_entry_from_the_pending_list_and_the_stream(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("a")
    await queue.enqueue("b", "high")
    await queue.enqueue("c")
    messages = await queue.read_new("w1", 3, block_ms=10)
    async with core.redis.pipeline(transaction=False) as pipe:
        queue.add_ack(pipe, [m for m in messages if m.task_id != "c"])  # entries of both streams
        await pipe.execute()
    assert [m.task_id for m in await queue.read_own_pending("w1", 5)] == ["c"]
    assert await core.redis.xlen(core.keys.stream_high) == 0
    assert [f["task_id"] for _, f in await core.redis.xrange(core.keys.stream_normal)] == ["c"]


async def test_ack_deletes_the_entry_even_when_the_group_is_gone(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("t")
    (message,) = await queue.read_new("w1", 1, block_ms=10)
    await core.redis.xgroup_destroy(message.stream, core.keys.group)  # Redis came back without it
    await queue.ack(message)
    assert await core.redis.xlen(message.stream) == 0


async def test_renew_keeps_a_live_workers_entries_from_idle_reclaim(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("kept")
    await queue.enqueue("stale")
    kept, stale = await queue.read_new("w1", 2, block_ms=10)
    await _age(core, [kept, stale], "w1")
    await queue.renew("w1", [kept])
    claimed = await queue.autoclaim("w2", min_idle_ms=LONG_IDLE_MS // 2, count=10)
    assert [m.task_id for m in claimed] == ["stale"]
    holders = {p["message_id"]: p["consumer"] for p in await _pending(core, core.keys.stream_normal)}
    assert holders == {kept.entry_id: "w1", stale.entry_id: "w2"}


# ------------------------------------------------------------------------------------------------ claiming


async def test_claim_from_moves_a_dead_consumers_entries_up_to_count_across_streams(
        core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("h0", "high")
    for i in range(2):
        await queue.enqueue(f"n{i}")
    await queue.enqueue("other")
    dead = await queue.read_new("dead", 3, block_ms=10)
    await queue.read_new("alive", 1, block_ms=10)
    await _age(core, dead, "dead")
    first = await queue.claim_from("dead", "rescuer", 2)
    assert [m.task_id for m in first] == ["h0", "n0"]
    rest = await queue.claim_from("dead", "rescuer", 10)
    assert [m.task_id for m in rest] == ["n1"]
    assert await queue.claim_from("dead", "rescuer", 10) == []
    assert [m.task_id for m in await queue.read_own_pending("rescuer", 10)] == ["h0", "n0", "n1"]
    assert [m.task_id for m in await queue.read_own_pending("alive", 10)] == ["other"]


async def test_of_two_workers_claiming_one_entry_only_the_first_gets_it(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("t")
    dead = await queue.read_new("dead", 1, block_ms=10)
    await _age(core, dead, "dead")
    pending_before = await _pending(core, core.keys.stream_normal)
    assert [m.task_id for m in await queue.claim_from("dead", "first", 1)] == ["t"]
    # The second read the dead consumer's list before the first claim moved it: it claims by those ids.
    reply = await core.redis.xclaim(core.keys.stream_normal, core.keys.group, "second", 1000,
                                    [p["message_id"] for p in pending_before])
    assert reply == [], "the first claim reset the idle time, so the second one skips the entry"
    assert [m.task_id for m in await queue.read_own_pending("first", 5)] == ["t"]


async def test_autoclaim_takes_only_entries_idle_longer_than_asked(core: Core, queue: TaskQueue) -> None:
    for name in ("h-old", "h-new"):
        await queue.enqueue(name, "high")
    await queue.enqueue("n-old")
    old_high, new_high, old_normal = await queue.read_new("w1", 3, block_ms=10)
    await _age(core, [old_high, old_normal], "w1")
    claimed = await queue.autoclaim("w2", min_idle_ms=LONG_IDLE_MS // 2, count=10)
    assert [m.task_id for m in claimed] == ["h-old", "n-old"]
    assert [m.task_id for m in await queue.read_own_pending("w1", 5)] == ["h-new"]
    assert new_high.task_id == "h-new"


# --------------------------------------------------------------------------------------------- dead letter


async def test_dead_letter_copies_the_entry_with_its_reason_then_acks_it(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("doomed", "high")
    (message,) = await queue.read_new("w1", 1, block_ms=10)
    await queue.dead_letter(message, "gave up after 3 attempts")
    ((_, fields),) = await core.redis.xrange(core.keys.dead_letter)
    assert {k: v for k, v in fields.items() if k != "at"} == {
        "task_id": "doomed", "stream": core.keys.stream_high, "entry_id": message.entry_id,
        "reason": "gave up after 3 attempts",
    }
    assert float(fields["at"]) > 0
    assert await core.redis.xlen(core.keys.stream_high) == 0
    assert await queue.read_own_pending("w1", 5) == []


# -------------------------------------------------------------------------------------------------- consumers


async def test_consumers_sums_pending_entries_across_the_streams(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("h", "high")
    await queue.enqueue("n")
    await queue.enqueue("m")
    await queue.read_new("w1", 2, block_ms=10)
    await queue.read_new("w2", 1, block_ms=10)
    await core.redis.xgroup_createconsumer(core.keys.stream_normal, core.keys.group, "idle")
    consumers = await queue.consumers()
    assert {name: info.pending for name, info in consumers.items()} == {"w1": 2, "w2": 1, "idle": 0}
    assert all(info.idle_ms >= 0 for info in consumers.values())


async def test_consumers_skips_a_stream_whose_group_is_missing(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("n")
    await queue.read_new("w1", 1, block_ms=10)
    await core.redis.xgroup_destroy(core.keys.stream_high, core.keys.group)
    assert {name: info.pending for name, info in (await queue.consumers()).items()} == {"w1": 1}


async def test_consumers_skips_a_stream_that_is_gone(core: Core, queue: TaskQueue) -> None:
    """A Redis that restarted empty has no streams: the reclaimer's look at consumers must not crash."""
    await queue.enqueue("n")
    await queue.read_new("w1", 1, block_ms=10)
    await core.redis.delete(core.keys.stream_high)
    assert {name: info.pending for name, info in (await queue.consumers()).items()} == {"w1": 1}
    await core.redis.delete(core.keys.stream_normal)
    assert await queue.consumers() == {}


async def test_a_consumer_is_deleted_only_while_it_holds_no_entry(core: Core, queue: TaskQueue) -> None:
    await queue.enqueue("t", "high")
    (message,) = await queue.read_new("busy", 1, block_ms=10)
    await core.redis.xgroup_createconsumer(core.keys.stream_normal, core.keys.group, "busy")
    assert await queue.delete_idle_consumer("busy") is False
    assert "busy" in await queue.consumers()
    await queue.ack(message)
    assert await queue.delete_idle_consumer("busy") is True
    for stream in core.keys.streams:
        assert "busy" not in {c["name"] for c in await core.redis.xinfo_consumers(stream, core.keys.group)}


# ---------------------------------------------------------------------------------------------- entry states


async def test_entry_states_tell_gone_live_and_stranded_entries_apart(core: Core, queue: TaskQueue) -> None:
    waiting = await queue.enqueue("waiting")  # not delivered yet
    held = await queue.enqueue("held")
    stranded = await queue.enqueue("stranded")
    gone = await queue.enqueue("gone")
    high = await queue.enqueue("high", "high")
    await queue.read_new("w1", 1, block_ms=10)  # the high entry
    delivered = {m.task_id: m for m in await queue.read_new("w1", 3, block_ms=10)}
    assert list(delivered) == ["waiting", "held", "stranded"]
    await queue.ack(delivered["waiting"])
    waiting = await queue.enqueue("waiting")  # enqueued again, not delivered yet
    await core.redis.xclaim(core.keys.stream_normal, core.keys.group, "dead", 0, [stranded], justid=True)
    await core.redis.xgroup_delconsumer(core.keys.stream_normal, core.keys.group, "dead")  # deleted holding it
    await core.redis.xdel(core.keys.stream_normal, gone)
    states = await queue.entry_states([("normal", waiting), ("normal", held), ("normal", stranded),
                                       ("normal", gone), ("high", high)])
    assert states == [EntryState.LIVE, EntryState.LIVE, EntryState.STRANDED, EntryState.GONE, EntryState.LIVE]
    assert await queue.entry_state("normal", stranded) is EntryState.STRANDED
    await queue.delete_entry("normal", stranded)
    assert await queue.entry_state("normal", stranded) is EntryState.GONE
