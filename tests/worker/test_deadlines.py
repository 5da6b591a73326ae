"""The deadline sweeper: stage timeouts and task deadlines without a timer per stage."""

from __future__ import annotations

import asyncio

import pytest

from worker.deadlines import Deadlines


async def test_a_stage_past_its_timeout_is_cancelled_and_named() -> None:
    deadlines = Deadlines(tick_s=0.01)
    reached_after_sleep = False
    with pytest.raises(TimeoutError):
        async with deadlines.watch(60) as watch:
            watch.begin_stage("embed", 0.05)
            await asyncio.sleep(5)
            reached_after_sleep = True
    assert not reached_after_sleep
    assert watch.fired and watch.expired_stage == "embed" and watch.stage_timeout_s == 0.05


async def test_the_task_deadline_covers_the_time_between_stages() -> None:
    deadlines = Deadlines(tick_s=0.01)
    with pytest.raises(TimeoutError):
        async with deadlines.watch(0.05) as watch:
            watch.begin_stage("fetch", 60)
            watch.end_stage()
            await asyncio.sleep(5)
    assert watch.fired and watch.expired_stage is None


async def test_work_within_its_limits_is_left_alone_and_the_sweeper_stops() -> None:
    deadlines = Deadlines(tick_s=0.01)
    async with deadlines.watch(60) as watch:
        for stage in ("fetch", "parse"):
            watch.begin_stage(stage, 60)
            await asyncio.sleep(0.03)
            watch.end_stage()
    assert not watch.fired
    await asyncio.sleep(0.05)
    assert deadlines._sweeper is None


async def test_a_timeout_error_of_the_work_itself_is_not_taken_for_an_expiry() -> None:
    deadlines = Deadlines(tick_s=0.01)
    with pytest.raises(TimeoutError, match="upstream"):
        async with deadlines.watch(60) as watch:
            raise TimeoutError("upstream timed out")
    assert not watch.fired


async def test_an_outer_cancellation_is_not_turned_into_a_timeout() -> None:
    deadlines = Deadlines(tick_s=0.01)

    async def run() -> None:
        async with deadlines.watch(60):
            await asyncio.sleep(5)

    task = asyncio.create_task(run())
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
