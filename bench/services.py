"""Private servers that fault benchmarks stop and start at will: a PostgreSQL cluster (initdb + pg_ctl
under a temp dir, on a free 127.0.0.1 port), moto's S3 server, and a TCP proxy that can refuse every
connection for a while (an object store that is unreachable without losing what it holds).

Each `start()` raises `Unavailable` with a reason when this machine lacks what it needs, so callers
can skip that fault with a clear line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fleet import free_port


class Unavailable(RuntimeError):
    """This machine cannot run the service (binaries or packages missing)."""


def _postgres_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists() and (candidate / "initdb").exists():
            return candidate
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster owned by this process (trust auth, 127.0.0.1 only)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = 0
        self._bindir = _postgres_bindir()
        self._as_user: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        if self._bindir is None:
            raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # initdb refuses to run as root: run it as the postgres account
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no 'postgres' account to run PostgreSQL as") from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise Unavailable("running as root without runuser to start PostgreSQL as 'postgres'")
            self._as_user = [runuser, "-u", "postgres", "--"]
            os.chown(self.root, account.pw_uid, account.pw_gid)
            for parent in self.root.parents:  # the account must be able to reach its directory
                if parent == Path(tempfile.gettempdir()) or parent == parent.parent:
                    break
                parent.chmod(parent.stat().st_mode | 0o011)
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._pg_ctl("start", "-w", "-o", f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off")
        return self.url

    def restart(self) -> None:
        """An immediate stop (a crash, as far as the clients can tell) and a start."""
        self._pg_ctl("stop", "-m", "immediate", "-w")
        self._pg_ctl("start", "-w", "-o", f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off")

    def stop(self) -> None:
        if self.port and (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl("stop", "-m", "immediate", "-w")

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), *args)

    def _run(self, tool: str, *args: str) -> None:
        assert self._bindir is not None
        subprocess.run([*self._as_user, str(self._bindir / tool), *args], check=True, capture_output=True,
                       timeout=120)


class MotoServer:
    """moto's S3-protocol server in a child process on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> str:
        try:
            import moto.server  # noqa: F401  (only to know it is installed)
        except ImportError:
            raise Unavailable("moto[server] is not installed (pip install -e '.[dev]')") from None
        import httpx

        self.port = free_port()
        with open(self.root / "moto.log", "ab") as log:
            command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url, timeout=1.0)
                return self.url
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("moto server did not answer")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=30)


class PausableProxy:
    """A TCP proxy on 127.0.0.1 to `target_port`; `pause()` closes every connection and refuses new ones
    until `resume()`: the service looks unreachable, and keeps everything it holds."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def pause(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()

    async def resume(self) -> None:
        await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):  # either side going away ends the pipe
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
