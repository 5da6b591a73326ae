"""Container health check for every docvec role (the image's HEALTHCHECK runs it).

The role is the first argument, or else read from PID 1's command line (`docvec api|worker|vectordb`):
- api: GET http://127.0.0.1:<api.port>/healthz answers 200;
- vectordb: the REST API answers a collection list (with the configured token);
- worker: one of this container's consumers (named `<hostname>-<pid>-...`) has a heartbeat in Redis
  newer than `worker.heartbeat_timeout_s`.
Exit status 0 means healthy, 1 unhealthy.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import redis

TIMEOUT_S = 4.0
ROLES = ("api", "worker", "vectordb")


def _role() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    try:
        argv = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "api"
    words = [Path(a.decode(errors="replace")).name for a in argv if a]
    return next((w for w in words if w in ROLES), "api")


def _vectordb_port(default: int = 19530) -> int:
    argv = [a.decode(errors="replace") for a in Path("/proc/1/cmdline").read_bytes().split(b"\0") if a]
    if "--port" in argv[:-1]:
        return int(argv[argv.index("--port") + 1])
    return default


def check_api() -> bool:
    from common.settings import load_settings

    port = load_settings().api.port
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_S).status_code == 200


def check_vectordb() -> bool:
    from common.settings import load_settings

    token = load_settings().vectordb.token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = httpx.post(f"http://127.0.0.1:{_vectordb_port()}/v2/vectordb/collections/list",
                       json={}, headers=headers, timeout=TIMEOUT_S)
    return reply.status_code == 200 and reply.json().get("code") == 0


def check_worker() -> bool:
    from common.keys import Keys
    from common.settings import load_settings

    settings = load_settings()
    if not settings.redis.url:
        return True  # embedded Redis: nothing outside the worker to ask
    keys = Keys(prefix=settings.redis.prefix, hash_tag=settings.redis.hash_tag)
    if settings.redis.cluster:
        client = redis.RedisCluster.from_url(settings.redis.url, socket_timeout=TIMEOUT_S, decode_responses=True)
    else:
        client = redis.Redis.from_url(settings.redis.url, socket_timeout=TIMEOUT_S, decode_responses=True)
    try:
        seconds, _ = client.time()
        fresh = client.zrangebyscore(keys.workers, seconds - settings.worker.heartbeat_timeout_s, "+inf")
    finally:
        client.close()
    host = socket.gethostname()
    return any(name.startswith(f"{host}-") for name in fresh)


def main() -> int:
    checks = {"api": check_api, "worker": check_worker, "vectordb": check_vectordb}
    role = _role()
    try:
        healthy = checks[role]()
    except (OSError, httpx.HTTPError, redis.RedisError, ValueError) as exc:
        print(f"{role} unhealthy: {exc!r}")
        return 1
    print(f"{role} {'healthy' if healthy else 'unhealthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
