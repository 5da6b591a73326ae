"""Local proof of a separate-services deployment, no Docker: `docvec vectordb` + 3 `docvec worker`
+ `docvec api` (real model, real processes) ingest examples/ and answer a search; with `--milvus`,
the same path with `vectordb.uri` pointing at Milvus Lite (`docvec up`: Milvus Lite allows one
process per data file).

    .venv/bin/python scripts/fleet_demo.py [--milvus]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet import ProcessFleet, free_port  # noqa: E402
from common.redisconn import EmbeddedRedis  # noqa: E402

DOCVEC = [sys.executable, "-m", "docvec_cli"]
QUERY = "how does a worker recover tasks after a crash?"


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([*DOCVEC, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"docvec {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--milvus", action="store_true", help="use Milvus Lite as the vector store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="docvec-fleet-") as tmp:
        workdir = Path(tmp)
        redis = EmbeddedRedis(workdir / "redis")
        fleet = ProcessFleet(workdir=workdir, redis_url=redis.start(), prefix=f"demo{uuid.uuid4().hex[:6]}")
        api_port = free_port()
        api: subprocess.Popen[bytes] | None = None
        try:
            if args.milvus:
                fleet.vectordb_url = f"milvus://{workdir / 'milvus.db'}"
                command = [*DOCVEC, "up", "--port", str(api_port)]
            else:
                fleet.start_server()
                for n in range(3):
                    fleet.start_worker(f"demo-worker-{n}")
                command = [*DOCVEC, "api", "--port", str(api_port)]
            with open(workdir / "api.log", "ab") as log:
                api = subprocess.Popen(command, env=fleet.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            api_url = f"http://127.0.0.1:{api_port}"
            _wait_http(f"{api_url}/readyz", api)
            env = fleet.env()
            _cli("ingest", str(ROOT / "examples"), "--kb", "demo", "--wait", "--api", api_url, env=env)
            out = _cli("search", QUERY, "--kb", "demo", "-k", "2", "--api", api_url, env=env)
            if "task-recovery.md" not in out.splitlines()[0]:
                raise SystemExit("the top hit is not the task-recovery document")
            workers = httpx.get(f"{api_url}/api/v1/tasks", params={"kb": "demo"}).json()
            print("tasks ran on:", sorted({t["worker"] for t in workers}))
            api.send_signal(signal.SIGTERM)
            print("api exit code:", api.wait(timeout=60))
            for name in list(fleet.workers):
                print(f"{name} exit code:", fleet.terminate(name))
            print("OK: ingest and search through", "Milvus Lite" if args.milvus else "docvec vectordb + 3 workers")
        finally:
            if api is not None and api.poll() is None:
                api.kill()
            fleet.stop()
            redis.stop()


if __name__ == "__main__":
    main()
