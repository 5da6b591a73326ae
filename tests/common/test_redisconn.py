"""The embedded redis-server and the async client factory (real redis-server processes, own sockets)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
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


# --- the embedded server's lifetime is its parent's (issue 28 item 6) ---------------------------------------

# A docvec-like parent: starts the embedded server on a data dir, writes a key, prints the server's pid and URL,
# then idles until it is killed. With "orphan" it starts the server as docvec did before the server was tied to
# its parent (a plain child, nothing to stop it when the parent dies): a stale server, as a killed old docvec or
# a platform without PR_SET_PDEATHSIG leaves behind.
_PARENT = """
import sys, time
from pathlib import Path
import redis
from common import redisconn
if sys.argv[2] == "orphan":
    redisconn._server_argv = lambda binary, conf: [str(binary), str(conf)]
server = redisconn.EmbeddedRedis(Path(sys.argv[1]))
url = server.start()
client = redis.Redis.from_url(url)
client.set("written-before-the-kill", "kept")
client.close()
print(server.pidfile.read_text().strip(), url, flush=True)
time.sleep(600)
"""

GONE_WITHIN_S = 10.0


def _running(pid: int) -> bool:
    """Whether `pid` is a process that still runs (a zombie nobody reaped has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[int]]:
    """Pids of the servers the test's parents started: any still running at the end (a failed test) is
    stopped, after checking that the pid is still a redis-server under the test's directory."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if _running(pid) and "redis-server" in title and os.readlink(f"/proc/{pid}/cwd").startswith(str(tmp_path)):
            os.kill(pid, signal.SIGTERM)


def _start_parent(data_dir: Path, servers: list[int], mode: str = "tied") -> tuple[subprocess.Popen[bytes], int, str]:
    """A docvec-like parent process with its embedded server up: (parent, server pid, server URL)."""
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(data_dir), mode], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(root)}, cwd=root)
    assert parent.stdout is not None
    line = parent.stdout.readline().decode().split()
    assert len(line) == 2, f"the parent did not start its server (exit status {parent.poll()})"
    servers.append(int(line[0]))
    return parent, int(line[0]), line[1]


def _kill(parent: subprocess.Popen[bytes]) -> None:
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    if parent.stdout is not None:
        parent.stdout.close()


def _read_key(url: str) -> str | None:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        value = client.get("written-before-the-kill")
        return None if value is None else str(value)
    finally:
        client.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_server_dies_with_its_parent_and_its_data_survives(tmp_path: Path, servers: list[int]) -> None:
    parent, server_pid, url = _start_parent(tmp_path, servers)
    try:
        assert _running(server_pid) and _ping(url)
    finally:
        _kill(parent)
    assert _wait_gone(server_pid), f"redis-server {server_pid} outlived its SIGKILLed parent"
    with EmbeddedRedis(tmp_path) as server:
        assert server.owned and server.url == url
        assert _read_key(url) == "kept", "the AOF kept what was written before the kill"


@pytest.mark.parametrize("listen", ["unix", "tcp"])
def test_a_stale_server_of_the_data_dir_is_stopped_and_replaced(tmp_path: Path, servers: list[int],
                                                                listen: str) -> None:
    data_dir = tmp_path if listen == "unix" else tmp_path / ("d" * 100)  # too long a socket path: TCP
    parent, orphan_pid, url = _start_parent(data_dir, servers, "orphan")
    _kill(parent)
    assert _running(orphan_pid) and _ping(url), "the simulated orphan outlives its parent"
    assert url.startswith(f"{listen}://" if listen == "unix" else "redis://127.0.0.1:")
    server = EmbeddedRedis(data_dir)
    try:
        fresh_url = server.start()
        assert fresh_url == url or listen == "tcp"  # a TCP server gets a free port anew
        assert server.owned, "an orphan of a dead docvec is not reused"
        assert _wait_gone(orphan_pid), "the orphan was stopped"
        own_pid = int(server.pidfile.read_text())
        assert own_pid != orphan_pid and _running(own_pid)
        assert _read_key(fresh_url) == "kept", "the orphan's data is the new server's"
    finally:
        server.stop()
    assert _wait_gone(own_pid) and not _ping(fresh_url, timeout_s=0.2), "a clean stop leaves nothing running"


def test_a_server_whose_owner_is_alive_is_reused_and_dies_with_that_owner(tmp_path: Path,
                                                                         servers: list[int]) -> None:
    parent, server_pid, url = _start_parent(tmp_path, servers)
    try:
        server = EmbeddedRedis(tmp_path)
        assert server.start() == url and not server.owned, "a live docvec's server is shared, not replaced"
        server.stop()
        assert _running(server_pid) and _ping(url), "not ours to stop"
    finally:
        _kill(parent)
    if sys.platform.startswith("linux"):
        assert _wait_gone(server_pid)


def test_start_never_stops_what_it_cannot_prove_is_its_own_server(tmp_path: Path) -> None:
    """A pidfile naming a live process that is not a redis-server, and a URL file naming another data dir's
    server (pid reuse, copied files): both are left alone, and a fresh server is started."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        with EmbeddedRedis(tmp_path / "other") as other:
            assert other.url is not None
            mine = tmp_path / "mine" / "redis"
            mine.mkdir(parents=True)
            (mine / "redis.pid").write_text(str(bystander.pid))
            (mine / "redis.url").write_text(other.url)
            with EmbeddedRedis(tmp_path / "mine") as server:
                assert server.owned and server.url != other.url
                assert _ping(server.url or "")
            assert _ping(other.url), "another data dir's server is not ours to stop"
            assert _running(bystander.pid), "a process that is not our redis-server is never signalled"
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def test_the_server_outlives_the_short_lived_thread_that_started_it(tmp_path: Path) -> None:
    """Linux sends the parent-death signal when the thread that forked the child ends; `redis_for` starts the
    server from a pool thread (`asyncio.to_thread`), which may end long before the process does."""
    server = EmbeddedRedis(tmp_path)
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()
    try:
        assert server.url is not None
        pid = int(server.pidfile.read_text())
        for _ in range(20):  # a signal sent at the thread's exit would have landed by now
            time.sleep(0.05)
            assert _running(pid) and _ping(server.url), "the server died with the thread that started it"
    finally:
        server.stop()
    assert _wait_gone(pid)
