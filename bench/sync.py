"""Re-ingest costs only what changed: a real corpus ingested, ingested again unchanged, then again after
editing a few of its documents, in one run, through the same code as `docvec ingest` (in-process).

Corpus: `--corpus DIR` (every file below it), by default the Python documentation's library reference
from Debian's `python3-doc` package (`apt-get install python3-doc`; nothing is copied into the repository).
The documents are copied to a scratch directory, so the edits never touch the corpus.

Reported: first-ingest seconds; unchanged re-ingest seconds and its ratio to the first (goal <= 0.02);
re-ingest after editing `--edit-fraction` of the documents (one sentence added to a paragraph of each)
and its ratio (goal <= 0.10); chunks embedded vs reused in each run. Each time runs from the first file
hashed until every queued task is done.

    python -m bench.sync [--quick | --smoke] [--corpus DIR] [--documents N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    by_size,
    corpus_files,
    default_corpus,
    emit,
    generated_corpus,
    machine_state,
    size_flags,
    size_keys,
    summary,
)

BENCH = "sync"
GOAL_UNCHANGED_RATIO = 0.02
GOAL_EDITED_RATIO = 0.10
_FIRST_PARAGRAPH_END = re.compile(r"(<div class=\"body\"[^>]*>.*?<p>.*?)(</p>)", re.S)



def _edit(path: Path, n: int) -> None:
    """Add one sentence to the first paragraph of the page body (or append a line to other text)."""
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    sentence = f" This sentence was added by the sync benchmark, edit number {n}."
    edited, count = _FIRST_PARAGRAPH_END.subn(lambda m: m.group(1) + sentence + m.group(2), text, count=1)
    path.write_text(edited if count else text + sentence + "\n", encoding="utf-8", errors="surrogateescape")


async def _wait_idle(core: Any, labels: dict[str, str]) -> dict[str, Any]:
    """Wait until no task is queued or running (one cheap count per poll), then read the tasks."""
    from docvec_cli.watch import TaskView

    while True:
        counts = await asyncio.to_thread(core.repo.tasks.counts)
        if counts["queued"] == counts["running"] == 0:
            break
        await asyncio.sleep(0.2)
    tasks = (await asyncio.to_thread(core.repo.tasks.get_many, list(labels))).values()
    return {t.id: TaskView(t.id, t.status, t.progress, t.stage, t.error, t.chunks_embedded, t.chunks_reused)
            for t in tasks}


async def _ingest(core: Any, kb: Any, root: Path) -> tuple[float, Any]:
    from rich.console import Console

    from docvec_cli import ingest as ingesting

    started = time.perf_counter()
    sources = await asyncio.to_thread(ingesting.collect_sources, [root])
    report = await ingesting.run_ingest(ingesting.LocalBackend(core, kb), sources, sync=True, dry_run=False,
                                        console=Console(quiet=True), wait=lambda labels: _wait_idle(core, labels))
    elapsed = time.perf_counter() - started
    failed = [v for v in report.tasks.values() if v.status != "done"]
    if failed:
        raise RuntimeError(f"{len(failed)} tasks did not finish, e.g. {failed[0].status}: {failed[0].error}")
    return elapsed, report


def _chunks(report: Any) -> tuple[int, int]:
    return (sum(v.chunks_embedded for v in report.tasks.values()),
            sum(v.chunks_reused for v in report.tasks.values()))


async def _run(work: Path, files: list[Path], corpus: Path, edit_fraction: float) -> dict[str, Any]:
    import vectordb
    from common.redisconn import EmbeddedRedis
    from common.runtime import open_core
    from common.settings import Settings
    from lifecycle import documents as lifecycle
    from worker.consumer import Worker

    root = work / "docs"
    for path in files:
        target = root / path.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    with EmbeddedRedis(work / "redis-srv") as redis_server:
        settings = Settings(data_dir=str(work / "data"), redis={"url": redis_server.url})
        async with open_core(settings) as core:
            embedder = await core.embedders.get()
            await asyncio.to_thread(embedder.encode, ["warm up the model"], 1)
            vectors = vectordb.connect(settings.vectordb_uri)
            try:
                kb = await lifecycle.create_kb(core, "bench", tenant="default")
                worker = Worker(core, vectors)
                async with asyncio.TaskGroup() as group:
                    group.create_task(worker.run())
                    try:
                        first_s, first = await _ingest(core, kb, root)
                        emit(BENCH, "first_ingest_s", round(first_s, 2), "s", documents=len(files),
                             chunks_embedded=_chunks(first)[0])
                        unchanged_s, unchanged = await _ingest(core, kb, root)
                        emit(BENCH, "unchanged_reingest_s", round(unchanged_s, 3), "s",
                             tasks=len(unchanged.tasks), unchanged=len(unchanged.plan.unchanged))
                        edited = [root / p.relative_to(corpus) for p in files[:: max(1, round(1 / edit_fraction))]]
                        edited = edited[: math.ceil(len(files) * edit_fraction)]
                        for n, path in enumerate(edited):
                            _edit(path, n)
                        edited_s, after_edit = await _ingest(core, kb, root)
                        emit(BENCH, "edited_reingest_s", round(edited_s, 2), "s", edited=len(edited),
                             updated=len(after_edit.plan.updated))
                    finally:
                        worker.stop()
            finally:
                await vectors.close()
    first_embedded, _ = _chunks(first)
    edited_embedded, edited_reused = _chunks(after_edit)
    return {
        "documents": len(files),
        "chunks": first_embedded,
        "first_s": round(first_s, 2),
        "unchanged_s": round(unchanged_s, 3),
        "unchanged_ratio": round(unchanged_s / first_s, 4),
        "unchanged_tasks": len(unchanged.tasks),
        "edited_fraction": round(len(edited) / len(files), 4),
        "edited_documents": len(edited),
        "edited_updated": len(after_edit.plan.updated),
        "edited_s": round(edited_s, 2),
        "edited_ratio": round(edited_s / first_s, 4),
        # The re-ingest after the edits: the chunks the model embedded, and those whose stored vector it reused.
        "chunks_embedded": edited_embedded,
        "chunks_reused": edited_reused,
        "goal_unchanged_ratio": GOAL_UNCHANGED_RATIO,
        "goal_edited_ratio": GOAL_EDITED_RATIO,
        "goals_met": unchanged_s / first_s <= GOAL_UNCHANGED_RATIO and edited_s / first_s <= GOAL_EDITED_RATIO,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="a directory of real documents (default: python3-doc's HTML; "
                        "generated prose with --smoke)")
    parser.add_argument("--documents", type=int,
                        help="how many documents of the corpus (default 120; quick 100; smoke 6)")
    parser.add_argument("--max-bytes", type=int, default=64_000, help="leave out larger files (default 64000)")
    parser.add_argument("--edit-fraction", type=float, default=0.05, help="share of documents edited (0.05)")
    size_flags(parser, "100 documents of at most 40 kB")
    args = parser.parse_args(argv)
    count = args.documents or by_size(args, full=120, quick=100, smoke=6)
    with tempfile.TemporaryDirectory(prefix="docvec-bench-sync-") as tmp:
        # A smoke run without --corpus gets generated prose: no package to install.
        smoke_corpus = args.smoke and args.corpus is None
        corpus = generated_corpus(Path(tmp) / "corpus", count) if smoke_corpus else default_corpus(args.corpus)
        files = corpus_files(corpus, count, 40_000 if args.quick else args.max_bytes, exactly=True)
        emit(BENCH, "machine", machine_state(), "info")
        emit(BENCH, "corpus", {"path": "generated" if smoke_corpus else str(corpus), "documents": len(files),
                               "bytes": sum(p.stat().st_size for p in files)}, "info")
        results = asyncio.run(_run(Path(tmp), files, corpus, args.edit_fraction))
    summary(BENCH, **results, **size_keys(args), loadavg_1m=machine_state()["loadavg_1m"])


if __name__ == "__main__":
    main()
