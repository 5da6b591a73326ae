"""docvec on a real 3-node Redis Cluster (the bundled redis-server with `cluster-enabled yes`).

Documents are enqueued and run by an in-process worker through `redis.cluster: true`: every stream,
group, Lua script, pipeline and pub/sub message of the task path goes through the cluster client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

import vectordb
from common.redisconn import is_cluster, pubsub, redis_server_binary, server_info
from common.runtime import open_core
from common.settings import Settings
from lifecycle import documents as ingest
from lifecycle.garbage import GarbageCollector
from tests.fakes import HashEmbedder
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status
from vectordb.chunkstore import ChunkStore
from worker.janitor import Janitor

NODES = 3
SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000
START_TIMEOUT_S = 15.0
CLUSTER_OK_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PORT_TRIES = 50

pytestmark = pytest.mark.timeout(180)

TOPICS = ["tides", "bridges", "orchards", "glaciers", "libraries", "railways"]


def _document(i: int) -> bytes:
    parts = [f"# Notes {i}"]
    for j, topic in enumerate(TOPICS):
        parts.append(f"## {topic.title()}\n\n" + " ".join(
            f"Observation {k} of note {i} on {topic} was recorded in season {j + k} by the survey team."
            for k in range(8)
        ))
    return "\n\n".join(parts).encode()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster-bus port (port + 10000) is free as well."""
    ports: list[int] = []
    for _ in range(PORT_TRIES):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + CLUSTER_BUS_OFFSET < 65536 and port not in ports and _port_free(port + CLUSTER_BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"found only {len(ports)} usable port pairs in {PORT_TRIES} tries")


@dataclass
class LocalCluster:
    """Redis Cluster nodes started by this test; `stop()` ends every one of them."""

    workdir: Path
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    created_with: str = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        self.ports = _cluster_ports(NODES)
        for port in self.ports:
            node_dir = self.workdir / f"node-{port}"
            node_dir.mkdir(parents=True)
            conf = node_dir / "redis.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\n"
                f'dir "{node_dir}"\nlogfile "{node_dir / "redis.log"}"\n'
                "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 5000\n"
                "appendonly no\nsave \"\"\n"
            )
            self.procs.append(subprocess.Popen(
                [str(redis_server_binary()), str(conf)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in self.ports:
            self._wait_ping(port)
        self._create()
        self._wait_state_ok()

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)

    def _wait_ping(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.closing(self._client(port)) as client:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass  # not listening yet: poll again until the deadline
            time.sleep(0.05)
        raise RuntimeError(f"redis node on port {port} did not answer within {START_TIMEOUT_S}s")

    def _create(self) -> None:
        cli = redis_server_binary().parent / "redis-cli"
        if cli.exists():
            subprocess.run(
                [str(cli), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            self.created_with = "redis-cli --cluster create"
            return
        # No redis-cli: split the slots by hand and introduce the nodes to each other.
        per_node = SLOTS // NODES
        for i, port in enumerate(self.ports):
            first = i * per_node
            last = SLOTS - 1 if i == NODES - 1 else first + per_node - 1
            with contextlib.closing(self._client(port)) as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
                if i > 0:
                    client.execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0])
        self.created_with = "CLUSTER ADDSLOTS + CLUSTER MEET"

    def _wait_state_ok(self) -> None:
        deadline = time.monotonic() + CLUSTER_OK_TIMEOUT_S
        while time.monotonic() < deadline:
            states = []
            for port in self.ports:
                with contextlib.closing(self._client(port)) as client:
                    states.append(client.cluster("info"))  # parsed into a dict by redis-py
            if all(s.get("cluster_state") == "ok" and int(s.get("cluster_known_nodes", 0)) == NODES for s in states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"cluster not ok within {CLUSTER_OK_TIMEOUT_S}s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self.procs.clear()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _settings(tmp_path: Path, cluster: LocalCluster) -> Settings:
    return Settings(
        data_dir=str(tmp_path / "data"),
        redis={"url": cluster.url, "cluster": True, "hash_tag": True, "prefix": f"c{uuid.uuid4().hex[:8]}"},
        chunking={"chunk_tokens": 64, "overlap_tokens": 8},
        worker={"heartbeat_interval_s": 0.3, "heartbeat_timeout_s": 3.0, "block_ms": 100,
                "retry_backoff_s": 0.05, "shutdown_grace_s": 5.0, "janitor_interval_s": 0.5},
    )


def test_cluster_needs_hash_tag_and_url() -> None:
    with pytest.raises(ValueError, match="hash_tag"):
        Settings(redis={"url": "redis://127.0.0.1:1", "cluster": True})
    with pytest.raises(ValueError, match="redis.url"):
        Settings(redis={"cluster": True, "hash_tag": True})


async def _collect_events(client: aioredis.Redis, channel: str, until: asyncio.Event, into: list[dict[str, Any]],
                          ready: asyncio.Event) -> None:
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        ready.set()
        while not until.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                into.append(json.loads(message["data"]))


async def test_ingest_through_redis_cluster(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    settings = _settings(tmp_path, redis_cluster)
    async with open_core(settings, embedder=HashEmbedder()) as core:
        assert is_cluster(core.redis), "redis.cluster: true must give a cluster client"
        keys = core.keys
        slot_keys = [*keys.streams, keys.dead_letter, keys.workers, keys.janitor_lock, keys.worker("w"),
                     keys.cancel("t"), keys.all_events]
        assert len({core.redis.keyslot(k) for k in slot_keys}) == 1, "a deployment's keys must share one slot"
        # The node serving the deployment's slot answers INFO for restart detection.
        assert (await server_info(core.redis, keys.workers))["run_id"]

        # Subscribe on a node that does NOT own the slot: cluster pub/sub is broadcast to every node.
        owner = core.redis.get_node_from_key(keys.all_events)
        assert owner is not None
        other_port = next(p for p in redis_cluster.ports if p != owner.port)
        events: list[dict[str, Any]] = []
        listening, finished = asyncio.Event(), asyncio.Event()
        subscriber = aioredis.Redis(host="127.0.0.1", port=other_port, decode_responses=True)
        vectors = vectordb.connect(str(tmp_path / "vectors"))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_collect_events(subscriber, keys.all_events, finished, events, listening))
                async with asyncio.timeout(10):
                    await listening.wait()
                try:
                    kb = await ingest.create_kb(core, "kb", tenant="default")
                    submitted = [
                        await submit_document(core, kb, f"note{i}.md", _document(i), priority=priority)
                        for i, priority in enumerate(["normal", "high", "normal", "normal", "high", "normal"])
                    ]
                    async with running_worker(core, vectors, concurrency=3) as worker:
                        async with asyncio.timeout(30):
                            while await core.redis.zscore(keys.workers, worker.consumer) is None:
                                await asyncio.sleep(0.05)
                        janitor = Janitor(core, worker.consumer, GarbageCollector(core, ChunkStore(vectors)))
                        assert await janitor.run_once() is True  # a full round on the cluster
                        tasks = [await wait_for_status(core, task.id, timeout_s=60) for _, task in submitted]
                    await asyncio.sleep(0.3)  # let the last published events arrive
                finally:
                    finished.set()
            assert [t.status for t in tasks] == ["done"] * len(tasks), [t.error for t in tasks]
            chunks = ChunkStore(vectors)
            for document, _ in submitted:
                doc = await asyncio.to_thread(core.repo.documents.get, document.id)
                assert doc.chunk_count > 0
                assert await chunks.count_document(kb.collection, document.id) == doc.chunk_count
            for stream in keys.streams:  # every entry acked and deleted through the ack script
                assert await core.redis.xlen(stream) == 0
                assert (await core.redis.xpending(stream, keys.group))["pending"] == 0
            assert await core.redis.zscore(keys.workers, worker.consumer) is None, "worker deregistered"
            done_events = {e["task_id"] for e in events if e.get("event") == "done"}
            assert done_events == {task.id for _, task in submitted}
        finally:
            await vectors.close()
            await subscriber.aclose()


async def test_pubsub_helper_on_cluster(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    """`common.redisconn.pubsub` gives SSE readers a subscription on a cluster (no pubsub() there)."""
    settings = _settings(tmp_path, redis_cluster)
    async with open_core(settings, embedder=HashEmbedder()) as core:
        channel = core.keys.task_events("t1")
        subscription = pubsub(core.redis, channel)
        try:
            await subscription.subscribe(channel)
            received = None
            async with asyncio.timeout(10):
                while received is None:
                    await core.redis.publish(channel, "hello")
                    received = await subscription.get_message(ignore_subscribe_messages=True, timeout=0.2)
            assert received["data"] == "hello"
        finally:
            await subscription.aclose()


async def test_janitor_lease_on_cluster(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    settings = _settings(tmp_path, redis_cluster)
    vectors = vectordb.connect(str(tmp_path / "vectors"))
    async with open_core(settings, embedder=HashEmbedder()) as core:
        garbage = GarbageCollector(core, ChunkStore(vectors))
        first, second = Janitor(core, "worker-a", garbage), Janitor(core, "worker-b", garbage)
        assert await first.run_once() is True
        assert await second.run_once() is False, "the lease (a Lua script on the cluster) is exclusive"
        await first.release()
        assert await second.run_once() is True
        await second.release()
    await vectors.close()
