"""Real docvec processes for fault-injection runs (bench.chaos, the fleet tests): one
`docvec vectordb` server and worker processes on a shared Redis, started, SIGKILLed and
SIGTERMed at will. Everything binds to 127.0.0.1 and `stop()` ends what was started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
WORKER_COMMAND = (sys.executable, "-m", "docvec_cli", "worker")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ProcessFleet:
    """Processes sharing one data dir, Redis URL and key prefix, configured through DOCVEC_* env."""

    workdir: Path
    redis_url: str
    prefix: str
    settings_env: dict[str, str] = field(default_factory=dict)
    worker_command: Sequence[str] = WORKER_COMMAND
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    vectordb_url: str = ""

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCVEC_")}
        env.update({
            "DOCVEC_DATA_DIR": str(self.data_dir), "DOCVEC_REDIS__URL": self.redis_url,
            "DOCVEC_REDIS__PREFIX": self.prefix, "DOCVEC_VECTORDB__URI": self.vectordb_url,
            "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
        })
        env.update(self.settings_env)
        env.update(extra or {})
        return env

    def start_server(self, timeout_s: float = 60.0, *, same_port: bool = False) -> str:
        """Start the `docvec vectordb` server (again on its last port with `same_port`: workers keep
        their URL across a restart)."""
        port = int(self.vectordb_url.rsplit(":", 1)[1]) if same_port and self.vectordb_url else free_port()
        self.vectordb_url = f"http://127.0.0.1:{port}"
        with open(self.workdir / "vectordb.log", "ab") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "docvec_cli", "vectordb", "--port", str(port),
                 "--data", str(self.data_dir / "vectors")],
                env=self.env(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError("vectordb server died:\n" + self.tail("vectordb.log"))
            try:
                httpx.post(f"{self.vectordb_url}/v2/vectordb/collections/list", json={}, timeout=1.0)
                return self.vectordb_url
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"vectordb server did not answer within {timeout_s}s")

    def kill_server(self) -> None:
        """SIGKILL the vector store server (what a crash or an impatient restart does)."""
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait(timeout=30)
        self.server = None

    def start_worker(self, consumer: str, *args: str, extra_env: Mapping[str, str] | None = None) -> None:
        with open(self.workdir / f"worker-{consumer}.log", "ab") as log:
            self.workers[consumer] = subprocess.Popen(
                [*self.worker_command, "--consumer", consumer, *args],
                env=self.env(extra_env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def kill(self, consumer: str) -> None:
        proc = self.workers.pop(consumer)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def terminate(self, consumer: str, timeout_s: float = 60.0) -> int:
        proc = self.workers.pop(consumer)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout_s)

    def tail(self, name: str, chars: int = 4000) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def dead_workers(self) -> dict[str, int]:
        """Workers that exited on their own (not killed by us): name -> exit code."""
        return {name: proc.returncode for name, proc in self.workers.items() if proc.poll() is not None}

    def stop(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        self.workers.clear()
        if self.server is not None:
            if self.server.poll() is None:
                self.server.send_signal(signal.SIGTERM)
                try:
                    self.server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.server.kill()
                    self.server.wait(timeout=30)
            self.server = None
