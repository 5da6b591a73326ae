"""`docvec ingest` as a user runs it: a process on its own data dir (embedded redis-server, SQLite, embedded
vector store, the real `openai` embedding backend against a local endpoint), killed with SIGKILL while its
tasks are mid-embed, then run again: the second run finishes what the first left, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import vectordb
from common.db import Repository, TaskStatus, open_database
from common.settings import Settings
from lifecycle import documents as lifecycle
from tests.docvec_cli.embedserver import DIM, EmbedServer
from tests.fakes import HashEmbedder
from vectordb.chunkstore import ChunkStore

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPICS = {
    "lighthouse.md": "A lighthouse keeper trims the lamp wick before every storm.",
    "beekeeping.md": "Beekeepers smoke the hive gently so the colony stays calm.",
    "pottery.md": "Potters wedge clay to push trapped air bubbles out before throwing.",
    "sailing/knots.md": "A bowline knot makes a fixed loop that will not slip under load.",
    "sailing/tides.md": "Spring tides follow the new and full moon with the largest range.",
    "baking/sourdough.md": "Sourdough starter needs flour and water fed daily to stay lively.",
    "baking/croissants.md": "Croissant dough is folded with cold butter into many thin layers.",
    "astronomy.md": "Telescopes with larger mirrors gather more faint starlight.",
    "geology.md": "Basalt columns form when thick lava cools and contracts slowly.",
    "chess.md": "Castling moves the king two squares toward a rook in one turn.",
    "origami.md": "An origami crane starts from a square sheet folded into a bird base.",
    "cycling.md": "Cyclists lower tyre pressure on gravel roads for better grip.",
}
WORKER_SLOTS = 3  # a few tasks mid-embed when killed, the others still queued
KILL_WAIT_S = 120.0
RUN_TIMEOUT_S = 120.0


def _write_folder(root: Path) -> None:
    for name, sentence in TOPICS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        title = name.rsplit("/", 1)[-1].removesuffix(".md").title()
        path.write_text(f"# {title}\n\n{sentence}\n\nThese notes were written for the {title.lower()} club.\n")


def _env(data_dir: Path, embed: EmbedServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCVEC_")}
    env.update(embed.env())
    env.update({
        "DOCVEC_DATA_DIR": str(data_dir), "DOCVEC_REDIS__URL": "",  # docvec starts its own redis-server
        "DOCVEC_WORKER__MAX_CONCURRENT_TASKS": str(WORKER_SLOTS), "DOCVEC_WORKER__BLOCK_MS": "100",
        "DOCVEC_WORKER__SHUTDOWN_GRACE_S": "2", "DOCVEC_CHUNKING__CHUNK_TOKENS": "64",
        # A dead consumer's entries are claimed only after these: within RUN_TIMEOUT_S, the second run finishes
        # the first one's tasks only by replaying them under the in-process worker's own consumer name.
        "DOCVEC_WORKER__HEARTBEAT_TIMEOUT_S": "900", "DOCVEC_WORKER__CLAIM_IDLE_S": "900",
        "DOCVEC_CHUNKING__OVERLAP_TOKENS": "8", "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200",
    })
    return env


def _ingest_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "docvec_cli", "ingest", str(folder), "--kb", "hobbies", "--wait"]


def _running_tasks(settings: Settings) -> int:
    database = open_database(settings.db_url)
    try:
        return len(Repository(database).tasks.query(status=TaskStatus.RUNNING, limit=100))
    finally:
        database.close()


def _wait_for_running_task(process: subprocess.Popen[bytes], settings: Settings, embed: EmbedServer,
                           log: Path) -> None:
    """Until a task is running and held mid-embed (bounded); fails at once if the process ended."""
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"docvec ingest exited ({process.returncode}) before it was killed:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        if embed.waiting > 0 and _running_tasks(settings) > 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"no task was running within {KILL_WAIT_S}s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop_orphan_redis(data_dir: Path) -> None:
    """The killed run's redis-server, if it outlived it (this test started it, through that run)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        pid = int((data_dir / "redis" / "redis.pid").read_text().strip())
        if b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)


async def _search_each_topic(settings: Settings) -> dict[str, str]:
    """Each topic's sentence searched in the store the processes wrote: topic file -> the top hit's file."""
    database = await asyncio.to_thread(open_database, settings.db_url)
    client = vectordb.connect(settings.vectordb_uri)
    try:
        repo = await asyncio.to_thread(Repository, database)
        kb = await asyncio.to_thread(repo.kbs.get, "hobbies", tenant="default")
        embedder = HashEmbedder(dim=DIM)
        tops = {}
        for name, sentence in TOPICS.items():
            hits = await lifecycle.search(repo, ChunkStore(client), kb, np.asarray(embedder.encode([sentence], 1)[0]),
                                          3)
            tops[name] = hits[0].filename if hits else ""
        return tops
    finally:
        await client.close()
        database.close()


async def test_a_killed_ingest_is_finished_by_the_next_run(tmp_path: Path, embed: EmbedServer) -> None:
    folder, data_dir = tmp_path / "notes", tmp_path / "data"
    _write_folder(folder)
    settings = Settings(data_dir=str(data_dir))
    env = _env(data_dir, embed)
    log = tmp_path / "first.log"
    embed.hold()
    try:
        with log.open("wb") as out:
            first = subprocess.Popen(_ingest_command(folder), env=env, cwd=tmp_path, stdout=out,
                                     stderr=subprocess.STDOUT)
        try:
            await asyncio.to_thread(_wait_for_running_task, first, settings, embed, log)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        embed.release()
        unfinished = await asyncio.to_thread(_unfinished_documents, settings)
        assert unfinished == len(TOPICS), "the killed run queued every file and finished none"

        second = await asyncio.to_thread(subprocess.run, _ingest_command(folder), env=env, cwd=tmp_path,
                                         capture_output=True, timeout=RUN_TIMEOUT_S)
        output = (second.stdout + second.stderr).decode(errors="replace")
        assert second.returncode == 0, output
        total = len(TOPICS)
        assert f"0 added, 0 updated, 0 unchanged, {total} unfinished from an earlier ingest, 0 deleted" in output, \
            output
        assert f"of the {total} unfinished, {total} finished now" in output, output
        assert f"{total}/{total} documents done" in output, output

        assert await asyncio.to_thread(_unfinished_documents, settings) == 0
        tops = await _search_each_topic(settings)
        assert tops == {name: name.rsplit("/", 1)[-1] for name in TOPICS}, "every document is searchable"

        third = await asyncio.to_thread(subprocess.run, _ingest_command(folder), env=env, cwd=tmp_path,
                                        capture_output=True, timeout=RUN_TIMEOUT_S)
        assert third.returncode == 0 and f"0 added, 0 updated, {total} unchanged, 0 deleted" in third.stdout.decode()
    finally:
        embed.release()
        _stop_orphan_redis(data_dir)


def _unfinished_documents(settings: Settings) -> int:
    """Documents of the knowledge base that are not done (and how the store sees them: none has chunks)."""
    database = open_database(settings.db_url)
    try:
        repo = Repository(database)
        kb = repo.kbs.get("hobbies", tenant="default")
        return sum(d.status != "done" or d.chunk_count == 0 for d in repo.documents.of_kb(kb.id))
    finally:
        database.close()
