"""The embedded redis-server and the async client factory (real redis-server processes, own sockets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from common.errors import TransientError
from common.redisconn import (
    EmbeddedRedis,
    RedisVersionError,
    _parse_version,
    _ping,
    connect,
    redis_for,
    redis_server_binary,
)
from common.settings import RedisSettings, Settings


def test_binary_is_found() -> None:
    assert redis_server_binary().name == "redis-server"


async def test_start_ping_stop(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        assert server.owned
        assert server.url == f"unix://{tmp_path / 'redis' / 'redis.sock'}"
        client = await connect(server.url)
        try:
            assert await client.ping() is True
            assert await client.set("k", "v")
            assert await client.get("k") == "v"  # decode_responses
        finally:
            await client.aclose()
        assert server.pidfile.exists() and server.logfile.exists()
        url = server.url
    assert not _ping(url, timeout_s=0.2)
    assert server.url is None and not server.owned


async def test_aof_written_and_data_survives_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        client = await connect(server.start())
        await client.xadd("stream", {"task": "t1"})
        await client.set("durable", "yes")
        await client.aclose()
    aof = tmp_path / "redis" / "appendonly.aof"
    assert aof.exists() and aof.stat().st_size > 0
    assert b"durable" in aof.read_bytes()
    with EmbeddedRedis(tmp_path) as server:
        client = await connect(server.start())
        try:
            assert await client.get("durable") == "yes"
            assert await client.xlen("stream") == 1
        finally:
            await client.aclose()


def test_second_instance_reuses_a_live_server(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    try:
        second = EmbeddedRedis(tmp_path)
        assert second.start() == url
        assert not second.owned
        second.stop()  # not owned: must leave the server running
        assert _ping(url)
    finally:
        first.stop()
    assert not _ping(url, timeout_s=0.2)


def test_stale_pidfile_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "redis.pid").write_text("999999999")
    (tmp_path / "redis" / "redis.url").write_text(f"unix://{tmp_path}/redis/redis.sock")
    with EmbeddedRedis(tmp_path) as server:
        assert server.owned and _ping(server.url or "")


def test_long_path_falls_back_to_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    assert len(os.fsencode(deep / "redis" / "redis.sock")) > 107
    with EmbeddedRedis(deep) as server:
        assert server.url is not None and server.url.startswith("redis://127.0.0.1:")
        assert _ping(server.url)
        assert not (deep / "redis" / "redis.sock").exists()


async def test_redis_for_embedded_starts_and_stops(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    async with redis_for(settings) as (client, url):
        assert url.startswith("unix://")
        assert await client.ping() is True
    assert not _ping(url, timeout_s=0.2)


async def test_redis_for_uses_configured_url(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "external") as server:
        settings = Settings(data_dir=str(tmp_path / "data"), redis=RedisSettings(url=server.url or ""))
        async with redis_for(settings) as (client, url):
            assert url == server.url
            assert await client.ping() is True
        assert _ping(server.url or "")  # not ours to stop
        assert not (tmp_path / "data" / "redis").exists()


async def test_connect_unreachable_is_transient(tmp_path: Path) -> None:
    with pytest.raises(TransientError):
        await connect(f"unix://{tmp_path}/nothing.sock", socket_timeout_s=0.5, retries=1)


async def test_old_server_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def old_info(self: aioredis.Redis, *args: object, **kwargs: object) -> dict[str, str]:
        return {"redis_version": "6.0.16"}

    with EmbeddedRedis(tmp_path) as server:
        monkeypatch.setattr(aioredis.Redis, "info", old_info)
        with pytest.raises(RedisVersionError, match="6.2"):
            await connect(server.url or "")


def test_parse_version() -> None:
    assert _parse_version("6.2.14") == (6, 2, 14)
    assert _parse_version("7.0.0-rc1") == (7, 0, 0)
    assert _parse_version("255.255.255") > (6, 2, 0)
