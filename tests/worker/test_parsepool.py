"""Parsing and chunking in child processes (worker/parsepool.py): real processes, the bundled model's
real tokenizer, real documents; faults (a hung parse, a crashed parse, an error that cannot travel)
injected inside the child while it parses. Through a running worker: tests/worker/test_consumer.py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.embedding.st_embedder import bundled_model_path
from common.embedding.tokenizer import ModelTokenizer
from common.errors import CorruptDocument, LimitExceeded
from common.settings import LimitsSettings
from tests.common.docgen import make_pdf
from tests.fakes import FaultyTokenizer, HashTokenizer
from worker.parsepool import (
    ChunkRequest,
    ParsePool,
    ParseProcessDied,
    ParseProcessError,
    ParseRunner,
    parse_and_chunk,
)

HTML = ("<html><head><title>Guide</title></head><body><h1>Guide</h1>"
        + "".join(f"<h2>Part {i}</h2><p>{' '.join(f'Sentence {j} of part {i} is about rivers.' for j in range(30))}</p>"
                  "<table><tr><td>a</td><td>b</td></tr></table>" for i in range(6))
        + "</body></html>").encode()


def _request(data: bytes, filename: str, **kwargs: object) -> ChunkRequest:
    fields: dict[str, object] = {"limits": LimitsSettings(), "pages": None, "chunk_tokens": 64, "overlap_tokens": 8}
    fields.update(kwargs)
    return ChunkRequest(data=data, filename=filename, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tokenizer() -> ModelTokenizer:
    return ModelTokenizer.from_model_dir(bundled_model_path())


@pytest.fixture
async def pool(tokenizer: ModelTokenizer) -> AsyncIterator[ParsePool]:
    made = ParsePool(2, tokenizer)
    yield made
    await made.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_child_chunks_exactly_as_a_thread_does(pool: ParsePool, tokenizer: ModelTokenizer) -> None:
    pdf = make_pdf([f"Page {p} holds words about glaciers." for p in range(1, 4)])
    markdown = "\n\n".join(f"# H{i}\n\nText {i} here." for i in range(20)).encode()
    documents = [(HTML, "guide.html"), (pdf, "deck.pdf"), (markdown, "notes.md")]
    for data, name in documents:
        child = await pool.run(_request(data, name))
        here = parse_and_chunk(_request(data, name), tokenizer)
        assert child.chunks == here.chunks and child.chunks, name
        assert (child.format, child.characters, child.sections) == (here.format, here.characters, here.sections)
    assert 1 <= len(pool.pids()) <= 2


async def test_bad_input_raises_its_own_error_from_the_child(pool: ParsePool) -> None:
    with pytest.raises(CorruptDocument, match="broken.pdf"):
        await pool.run(_request(b"%PDF-1.4 not really a pdf", "broken.pdf"))
    limits = LimitsSettings(max_text_chars=10)
    with pytest.raises(LimitExceeded, match="max_text_chars"):
        await pool.run(_request(b"far more than ten characters of text", "long.txt", limits=limits))
    assert (await pool.run(_request(b"Still parsing after bad input.", "ok.txt"))).chunks


async def test_a_cancelled_parse_kills_its_child_and_the_next_gets_a_fresh_one() -> None:
    pool = ParsePool(1, FaultyTokenizer("hang"))
    try:
        await pool.run(_request(b"warm", "warm.txt"))
        [first] = pool.pids()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await pool.run(_request(b"this one hangs: FAULT", "hang.txt"))
        for _ in range(100):
            if not _pid_alive(first):
                break
            await asyncio.sleep(0.05)
        assert not _pid_alive(first), "the hung parse is stopped, not left running"
        assert (await pool.run(_request(b"after the timeout", "next.txt"))).chunks
        assert pool.pids() and pool.pids() != [first]
    finally:
        await pool.close()


async def test_a_child_that_dies_mid_parse_is_a_transient_error(tmp_path: Path) -> None:
    pool = ParsePool(1, FaultyTokenizer("exit", marker=str(tmp_path / "crashed-once")))
    try:
        with pytest.raises(ParseProcessDied, match=r"crash\.txt: the process parsing it exited \(exit code 3\)"):
            await pool.run(_request(b"this one crashes: FAULT", "crash.txt"))
        again = await pool.run(_request(b"this one crashes: FAULT", "crash.txt"))  # the retry
        assert again.chunks
    finally:
        await pool.close()


async def test_an_error_that_cannot_be_pickled_arrives_by_type_and_message() -> None:
    pool = ParsePool(1, FaultyTokenizer("unpicklable"))
    try:
        with pytest.raises(ParseProcessError, match="odd.txt: UnpicklableError: an error with a callback"):
            await pool.run(_request(b"FAULT in here", "odd.txt"))
        assert (await pool.run(_request(b"the child lives on", "ok.txt"))).chunks
    finally:
        await pool.close()


async def test_close_stops_every_child(tokenizer: ModelTokenizer) -> None:
    pool = ParsePool(2, tokenizer)
    await pool.start()
    pids = pool.pids()
    assert len(pids) == 2
    await pool.close()
    assert not any(_pid_alive(pid) for pid in pids)
    with pytest.raises(ParseProcessDied, match="closed"):
        await pool.run(_request(b"too late", "late.txt"))


async def test_the_runner_uses_threads_without_processes_or_a_picklable_tokenizer() -> None:
    limit = asyncio.Semaphore(1)
    threads = ParseRunner(0, limit)
    result = await threads.run(_request(b"Parsed in a thread.", "a.txt"), HashTokenizer())
    assert result.chunks and threads.pool is None
    no_tokenizer = ParseRunner(2, limit)
    await no_tokenizer.run(_request(b"No chunk_tokenizer to send.", "b.txt"), HashTokenizer())
    assert no_tokenizer.pool is None
    await threads.close()
    await no_tokenizer.close()
