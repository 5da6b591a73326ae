"""Parsing and chunking, the CPU-bound half of the pipeline, in child processes one per core.

In threads they hold the worker's GIL: with the model's cost removed (`bench.pipeline --embedder
instant`), parsing and chunking were most of what one worker process did, and the event loop that
feeds the model, writes the index and settles tasks waited behind them. A `ParsePool` runs
`parse_and_chunk` in `worker.parse_processes` children (default: one per usable core), each with its
own copy of the model's tokenizer (sent once, as its JSON), so the worker's own process keeps its
core for everything else.

A child is also the only thing a stage timeout can stop for real: a parse cancelled by its timeout
(or by a cancelled task) kills its child, and the next parse starts a fresh one. A child that dies
under a document (a crash in a C parser, the kernel's OOM killer) fails that parse with
`ParseProcessDied`, a transient error: the task is retried and counts an attempt, so a document that
kills its parser every time fails after `worker.max_attempts` without taking the worker down. Errors a
parser raises travel back as themselves (`CorruptDocument`, `LimitExceeded`...); one that cannot be
pickled arrives as `ParseProcessError` with its type and message.

An embedder without a picklable `chunk_tokenizer` (a test's fake, a custom one) parses in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any, Protocol, TypeVar, cast

from common.chunking import Chunk, Chunker, ModelBound
from common.errors import TransientError
from common.parsing import parse_document
from common.parsing.pdf import PdfParser
from common.settings import LimitsSettings

# Seconds a child gets to exit after being asked to, before it is killed.
CHILD_EXIT_S = 2.0

Waiting = Callable[[], AbstractContextManager[None]]
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class ParseProcessDied(TransientError):
    """The child process parsing a document exited (crashed, killed): retried, counted as an attempt."""

    code = "parse_process_died"


class ParseProcessError(TransientError):
    """A parser raised an exception that cannot cross a process boundary; its type and message."""

    code = "parse_process_error"


class Job(Protocol[T_co]):
    """Work for a parse process on one document (`filename`): picklable, run there with the model's
    tokenizer."""

    @property
    def filename(self) -> str: ...

    def run(self, tokenizer: ModelBound) -> T_co: ...


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """One document to parse and chunk: its bytes, name, the parse limits, its page range (a page-range
    task) and the knowledge base's chunk sizes."""

    data: bytes
    filename: str
    limits: LimitsSettings
    pages: tuple[int, int] | None
    chunk_tokens: int
    overlap_tokens: int

    def run(self, tokenizer: ModelBound) -> ChunkedDocument:
        return parse_and_chunk(self, tokenizer)


@dataclass(frozen=True, slots=True)
class PageCountRequest:
    """A PDF's page count, checked against `limits.max_pages` (the split stage's question)."""

    data: bytes
    filename: str
    limits: LimitsSettings

    def run(self, tokenizer: ModelBound) -> int:
        return PdfParser(self.limits).page_count(self.data, self.filename)


@dataclass(frozen=True, slots=True)
class ChunkedDocument:
    """What parsing and chunking one document gave: its format, the size of its text and its chunks,
    with the seconds the chunking took (the chunk stage's)."""

    format: str
    characters: int
    sections: int
    chunks: list[Chunk]
    chunk_s: float


def parse_and_chunk(request: ChunkRequest, tokenizer: ModelBound) -> ChunkedDocument:
    """Parse `request.data` and chunk it with the model's tokenizer (in a thread or a child process).
    More chunks than `limits.max_chunks_per_document` stop the chunker there (`LimitExceeded`): the
    document is refused before anything is embedded. A page-range task (`pages`) is held to the limit
    on its own: the parts of a split PDF are chunked apart, on several workers."""
    parsed = parse_document(request.data, request.filename, limits=request.limits, pages=request.pages)
    parsed_at = time.perf_counter()
    chunker = Chunker.for_model(tokenizer, request.chunk_tokens, request.overlap_tokens)
    chunks = chunker.chunk(parsed, max_chunks=request.limits.max_chunks_per_document, filename=request.filename)
    return ChunkedDocument(format=parsed.format, characters=len(parsed.text), sections=len(parsed.sections),
                           chunks=chunks, chunk_s=time.perf_counter() - parsed_at)


def default_processes() -> int:
    """One per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _serve(conn: Connection, tokenizer: ModelBound) -> None:
    """A child's loop: a `Job` in, ("ok", its result) or ("error", exception) out; None or
    a closed pipe ends it. Ctrl-C is the parent's to handle (it stops the child in its own time)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per child: the pool is the parallelism
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        reply: tuple[str, Any]
        try:
            reply = ("ok", request.run(tokenizer))
        except Exception as exc:  # the parse's error, raised again in the parent
            reply = ("error", exc)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            error = reply[1] if reply[0] == "error" else exc
            payload = pickle.dumps(("error", ParseProcessError(f"{request.filename}: {type(error).__name__}: {error}")))
        conn.send_bytes(payload)


def _context() -> BaseContext:
    """forkserver where there is one (a child forks from a clean server that imported the parsers once),
    else spawn. Never plain fork: the worker's threads would leave their locks held in the child."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


class _Child:
    """One child process and the parent's end of its pipe; its calls block (the pool runs them in threads)."""

    def __init__(self, context: BaseContext, tokenizer: ModelBound) -> None:
        parent_end, child_end = context.Pipe()
        self.process = context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(child_end, tokenizer), name="docvec-parse", daemon=True)
        self.process.start()
        child_end.close()
        self._conn = parent_end

    def call(self, request: Job[T]) -> T:
        try:
            self._conn.send(request)
            payload = self._conn.recv_bytes()
        except (EOFError, OSError) as exc:
            self.process.join(CHILD_EXIT_S)
            raise ParseProcessDied(
                f"{request.filename}: the process parsing it exited (exit code {self.process.exitcode}); "
                "it is retried, and fails after worker.max_attempts if it kills its parser every time"
            ) from exc
        try:
            status, value = pickle.loads(payload)
        except (pickle.UnpicklingError, TypeError, AttributeError, ImportError) as exc:
            raise ParseProcessError(f"{request.filename}: the parser's answer could not be read: {exc}") from exc
        if status == "error":
            raise value
        return cast(T, value)

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def kill(self) -> None:
        self.process.kill()

    def close(self) -> None:
        """Ask the child to exit, kill it if it does not in time."""
        with contextlib.suppress(OSError):  # already gone
            self._conn.send(None)
        self.process.join(CHILD_EXIT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(CHILD_EXIT_S)
        self._conn.close()


class ParsePool:
    """`processes` children parsing and chunking with `tokenizer`, started when first needed. At most
    `processes` documents are parsed at once; the others wait their turn here."""

    def __init__(self, processes: int, tokenizer: ModelBound) -> None:
        if processes < 1:
            raise ValueError(f"a parse pool needs at least one process, got {processes}")
        self.tokenizer = tokenizer
        self._processes = processes
        self._context = _context()
        # One waiting thread per child: a parse never waits for a thread the event loop needs.
        self._threads = ThreadPoolExecutor(max_workers=processes, thread_name_prefix="docvec-parse")
        self._idle: asyncio.Queue[_Child | None] = asyncio.Queue()
        for _ in range(processes):
            self._idle.put_nowait(None)  # a slot whose child is started on first use
        self._children: set[_Child] = set()
        self._closed = False

    async def run(self, request: Job[T], waiting: Waiting = contextlib.nullcontext) -> T:
        """Run `request` in a child; `waiting()` is entered while it waits for a free one."""
        loop = asyncio.get_running_loop()
        with waiting():
            child = await self._idle.get()
        try:
            if self._closed:
                raise ParseProcessDied(f"{request.filename}: the worker's parse pool is closed")
            if child is None or not child.alive():
                if child is not None:
                    self._children.discard(child)
                child = await loop.run_in_executor(self._threads, self._start)
            try:
                return await loop.run_in_executor(self._threads, child.call, request)
            except ParseProcessDied:
                self._children.discard(child)
                child = None
                raise
            except asyncio.CancelledError:  # a timeout or a cancelled task: stop the parse itself
                child.kill()
                self._children.discard(child)
                child = None
                raise
        finally:
            self._idle.put_nowait(child)

    async def start(self) -> None:
        """Start every child now and have each parse a line (its imports and tokenizer are then ready)."""
        warm_up = ChunkRequest(data=b"Warm up.", filename="warm-up.txt", limits=LimitsSettings(), pages=None,
                               chunk_tokens=16, overlap_tokens=0)
        await asyncio.gather(*(self.run(warm_up) for _ in range(self._processes)))

    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        return sorted(child.process.pid for child in self._children if child.alive())

    def _start(self) -> _Child:
        child = _Child(self._context, self.tokenizer)
        self._children.add(child)
        return child

    async def close(self) -> None:
        """Stop every child (a parse still running is killed) and the waiting threads."""
        self._closed = True
        children, self._children = list(self._children), set()
        await asyncio.gather(*(asyncio.to_thread(child.close) for child in children))
        self._threads.shutdown(wait=False, cancel_futures=True)


class ParseRunner:
    """Where a worker parses and chunks: its `ParsePool` when it has processes and the embedder a
    `chunk_tokenizer` to send them, else its own threads, at most `threads` at once."""

    def __init__(self, processes: int, threads: asyncio.Semaphore) -> None:
        self._processes = processes
        self._threads = threads
        self._pool: ParsePool | None = None

    async def run(self, request: Job[T], embedder: ModelBound, waiting: Waiting = contextlib.nullcontext) -> T:
        """Run `request` (parse and chunk, count pages); `waiting()` is entered while it waits for its
        turn (a stage's timeout counts the parse, not the queue in front of it)."""
        pool = self._pool_for(embedder)
        if pool is not None:
            return await pool.run(request, waiting)
        with waiting():
            await self._threads.acquire()
        try:
            return await asyncio.to_thread(request.run, embedder)
        finally:
            self._threads.release()

    async def start(self, embedder: ModelBound) -> None:
        """Start the parse processes now rather than at the first document."""
        pool = self._pool_for(embedder)
        if pool is not None:
            await pool.start()

    @property
    def pool(self) -> ParsePool | None:
        """The parse processes, once started."""
        return self._pool

    def _pool_for(self, embedder: ModelBound) -> ParsePool | None:
        tokenizer = getattr(embedder, "chunk_tokenizer", None)
        if not self._processes or tokenizer is None:
            return None
        if self._pool is None:  # the embedder, and so its tokenizer, is loaded once per process
            self._pool = ParsePool(self._processes, tokenizer)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
