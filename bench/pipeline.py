"""End-to-end pipeline throughput vs bare `model.encode` of the same chunks, in one run.

docvec path: blob store -> DB rows -> XADD -> Redis -> worker (fetch, parse, chunk, embed with
title weighting, index into the embedded vector store) -> done. Baseline: `SentenceTransformer.encode`
of the very chunk texts docvec produced, with the same batch size, in the same process.

Corpus: generated prose by default; `--corpus DIR` runs every file below DIR (real documents: HTML,
PDF, office files...), `--documents N` the first N by name. Files that fail as bad input are counted
and left out; their chunks are not in either side of the ratio.

`--embedder instant` measures the pipeline's own ceiling: the real tokenizer (chunking, batch
planning) with vectors returned at once, everything else real; it reports chunks/s per worker process
and the seconds each stage took (summed over the tasks, which overlap) instead of the model ratio.

`--device cuda` runs both sides on the GPU (docvec in fp16 where it keeps cosine 0.99 to fp32).

`--count-containing TEXT` (repeatable) adds `chunks_containing` to the summary: how many chunks hold each
TEXT, whitespace runs compared as one space (e.g. a page's navigation bar, "modules | next | previous",
which docvec renders one link a line, and which should never be indexed).

    python -m bench.pipeline [--quick | --smoke] [--corpus DIR [--documents N] [--max-bytes B]] [--no-onnx]
                             [--embedder instant] [--device cuda] [--count-containing TEXT ...]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    BareModel,
    by_size,
    corpus_files,
    emit,
    machine_state,
    prose_document,
    size_flags,
    size_keys,
    summary,
)

BENCH = "pipeline"


class InstantEmbedder:
    """The bundled model's tokenizer and batch planning with no model: `encode` returns unit vectors at
    once (each text's own, from its hash), so what remains is the pipeline's own cost."""

    def __init__(self) -> None:
        from common.embedding.factory import build_embedder
        from common.settings import EmbeddingSettings

        self._real = build_embedder(EmbeddingSettings())
        self.dim, self.name, self.max_tokens = self._real.dim, self._real.name, self._real.max_tokens
        self.plan_batches = self._real.plan_batches
        self.count_tokens = self._real.count_tokens
        self.token_offsets = self._real.token_offsets
        self.chunk_tokenizer = self._real.chunk_tokenizer

    def encode(self, texts: list[str], batch_size: int) -> Any:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[np.arange(len(texts)), [hash(t) % self.dim for t in texts]] = 1.0
        return out


async def _docvec_run(data_dir: Path, documents: list[tuple[str, bytes]], batch_size: int,
                      backend: str = "sentence-transformers", onnx_cache_dir: Path | None = None,
                      embedder: Any = None, stages: dict[str, Any] | None = None, device: str = "cpu",
                      ) -> tuple[float, list[str], int, int]:
    import vectordb
    from common.redisconn import EmbeddedRedis
    from common.runtime import open_core
    from common.settings import Settings
    from lifecycle import documents as lifecycle
    from vectordb.chunkstore import ChunkStore
    from worker.consumer import Worker

    with EmbeddedRedis(data_dir / "redis-srv") as redis_server:
        settings = Settings(data_dir=str(data_dir), redis={"url": redis_server.url},
                            embedding={"batch_size": batch_size, "backend": backend,
                                       "onnx_cache_dir": str(onnx_cache_dir or "")})
        async with open_core(settings, embedder=embedder) as core:
            embedder = await core.embedders.get()
            embedder.encode(["warm up the model"], 1)
            if stages is not None and hasattr(embedder, "precision"):  # the torch embedder's fp16 / fp32
                stages["precision"] = embedder.precision
            vectors = vectordb.connect(settings.vectordb_uri)
            try:
                kb = await lifecycle.create_kb(core, "bench", tenant="default")
                worker = Worker(core, vectors)
                for name, data in documents:
                    await lifecycle.submit(core, kb, Path(name).name, data, source_id=name)
                await worker.warm_up()  # its parse processes started: a worker that has been up a while
                children = [psutil.Process(pid) for pid in worker.parse_process_ids()]
                children_cpu = [sum(child.cpu_times()[:2]) for child in children]
                started, cpu_started = time.perf_counter(), time.process_time()
                async with asyncio.TaskGroup() as group:
                    group.create_task(worker.run())
                    try:
                        # One cheap query per poll: the harness must not steal CPU from the pipeline.
                        while True:
                            counts = await asyncio.to_thread(core.repo.tasks.counts)
                            if counts["queued"] == counts["running"] == 0:
                                break
                            await asyncio.sleep(0.1)
                        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
                        children_s = sum(sum(child.cpu_times()[:2]) - before
                                         for child, before in zip(children, children_cpu, strict=True))
                    finally:
                        worker.stop()
                if stages is not None:
                    stages.update({name: round(h.sum, 2) for name, h in worker.metrics.stages.items()})
                    # CPU of the worker's own process (its threads), and of its parse processes.
                    stages["worker_process_cpu"] = round(cpu_s, 2)
                    stages["parse_processes_cpu"] = round(children_s, 2)
                failed = await asyncio.to_thread(core.repo.tasks.query, status="failed", limit=100_000)
                # Bad input fails at its first attempt; a failure after retries is the pipeline's own.
                retried = [t for t in failed if t.attempts > 1]
                if retried or counts["cancelled"]:
                    raise RuntimeError(f"{counts}: tasks failed after retries or were cancelled, e.g. "
                                       f"{retried[0].error if retried else 'cancelled'}")
                texts: list[str] = []
                for doc in await asyncio.to_thread(core.repo.documents.of_kb, kb.id, limit=100_000):
                    rows = await vectors.query(kb.collection, filter=f'document_id == "{doc.id}"',
                                               output_fields=["text", "ordinal"])
                    texts.extend(r["text"] for r in sorted(rows, key=lambda r: r["ordinal"]))
                stored = await ChunkStore(vectors).count_document(kb.collection, doc.id)
                assert stored > 0
            finally:
                await vectors.close()
    return elapsed, texts, len(texts), len(failed)


def _bare_encode(texts: list[str], batch_size: int, device: str) -> tuple[float, Any]:
    """Seconds for bare `SentenceTransformer.encode` of `texts` on `device` (on a CPU, torch on all the
    cores: docvec's worker shares them out itself), and the vectors (for the ONNX comparison)."""
    model = BareModel(device)
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size)
    return time.perf_counter() - started, vectors


def _min_cosine_onnx_vs_torch(texts: list[str], torch_vectors: Any, batch_size: int, cache_dir: Path) -> float:
    import numpy as np

    from common.embedding.factory import build_embedder
    from common.settings import EmbeddingSettings

    onnx = build_embedder(EmbeddingSettings(batch_size=batch_size, backend="onnx"), onnx_cache_dir=cache_dir)
    onnx_vectors = onnx.encode(texts, batch_size)
    return float(np.min(np.sum(torch_vectors * onnx_vectors, axis=1)))  # both are L2-normalized


def _containing(texts: list[str], wanted: list[str]) -> dict[str, Any]:
    """`chunks_containing` for the summary: how many of `texts` hold each of `wanted`, whitespace runs read
    as one space (nothing if none is wanted)."""
    if not wanted:
        return {}
    flat = [" ".join(t.split()) for t in texts]
    return {"chunks_containing": {w: sum(" ".join(w.split()) in t for t in flat) for w in wanted}}


def _instant(documents: list[tuple[str, bytes]], batch_size: int, corpus: dict[str, Any], size: dict[str, bool],
             count_containing: list[str]) -> None:
    """The pipeline with `InstantEmbedder`: chunks/s of one worker process and the per-stage seconds."""
    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="docvec-bench-") as tmp:
        elapsed_s, texts, chunks, bad = asyncio.run(_docvec_run(Path(tmp), documents, batch_size,
                                                                embedder=InstantEmbedder(), stages=stages))
    rate = chunks / elapsed_s
    emit(BENCH, "instant_chunks_per_s", round(rate, 1), "chunks/s", chunks=chunks, seconds=round(elapsed_s, 2))
    emit(BENCH, "instant_stage_seconds", stages, "s (summed over tasks)")
    summary(BENCH, **corpus, embedder="instant", bad_input_files=bad, chunks=chunks, seconds=round(elapsed_s, 2),
            chunks_per_s_per_worker=round(rate, 1), stage_seconds=stages, **size,
            **_containing(texts, count_containing), loadavg_1m=machine_state()["loadavg_1m"])


def _corpus(root: Path, count: int | None, max_bytes: int) -> list[tuple[str, bytes]]:
    """The files below `root` (`corpus_files`), keyed by their path under it."""
    if not root.is_dir():
        raise SystemExit(f"--corpus {root} is not a directory")
    return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in corpus_files(root, count, max_bytes)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline")
    size_flags(parser, "a small corpus that finishes within 60 s")
    parser.add_argument("--corpus", type=Path, help="a directory of real documents instead of generated prose")
    parser.add_argument("--documents", type=int, help="with --corpus: only the first N files by path")
    parser.add_argument("--max-bytes", type=int, default=50_000_000, help="with --corpus: leave out larger files")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu",
                        help="embedding.device for both sides: cpu, cuda[:N] (docvec's torch embedder picks fp16 "
                             "there when it stays within cosine 0.99 of fp32; the bare side runs fp32)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime backend")
    parser.add_argument("--count-containing", action="append", default=[], metavar="TEXT",
                        help="report how many chunks contain TEXT (repeatable)")
    parser.add_argument("--embedder", choices=["model", "instant"], default="model",
                        help="instant: no model (vectors at once), the pipeline's own ceiling per worker process")
    args = parser.parse_args()
    if args.corpus is not None:
        documents = _corpus(args.corpus, args.documents, args.max_bytes)
        corpus = {"corpus": str(args.corpus), "files": len(documents), "bytes": sum(len(d) for _, d in documents)}
    else:
        rng = random.Random(42)
        docs, sections = by_size(args, full=(90, 6), quick=(6, 6), smoke=(2, 1))
        documents = [(f"doc{i}.md", prose_document(rng, sections=sections, paragraphs=4, sentences=8).encode())
                     for i in range(docs)]
        corpus = {"corpus": "generated", "files": len(documents)}
    emit(BENCH, "machine", machine_state(), "info")
    emit(BENCH, "corpus", corpus, "info")
    size = size_keys(args)

    if args.embedder == "instant":
        _instant(documents, args.batch_size, corpus, size, args.count_containing)
        return
    run_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="docvec-bench-") as tmp:
        elapsed_s, texts, chunks, bad = asyncio.run(_docvec_run(Path(tmp), documents, args.batch_size,
                                                                stages=run_info, device=args.device))
    docvec_rate = chunks / elapsed_s
    emit(BENCH, "docvec_chunks_per_s", round(docvec_rate, 2), "chunks/s", chunks=chunks,
         seconds=round(elapsed_s, 2), device=args.device, precision=run_info.get("precision", ""))

    bare_s, torch_vectors = _bare_encode(texts, args.batch_size, args.device)
    bare_rate = chunks / bare_s
    emit(BENCH, "bare_encode_chunks_per_s", round(bare_rate, 2), "chunks/s", chunks=chunks,
         seconds=round(bare_s, 2))
    results = {
        **corpus, "device": args.device, "precision": run_info.get("precision", ""), "bad_input_files": bad,
        "chunks": chunks, "docvec_chunks_per_s": round(docvec_rate, 2),
        "bare_encode_chunks_per_s": round(bare_rate, 2), "ratio_vs_bare_encode": round(docvec_rate / bare_rate, 3),
        **_containing(texts, args.count_containing),
    }
    onnx_skipped = _onnx_skipped(args)
    if onnx_skipped is None:
        # The export is keyed by the model's fingerprint: reuse it across runs (it takes ~15 s; not timed).
        onnx_cache = Path(tempfile.gettempdir()) / "docvec-bench-onnx-cache"
        with tempfile.TemporaryDirectory(prefix="docvec-bench-onnx-") as tmp:
            onnx_s, _, onnx_chunks, _ = asyncio.run(
                _docvec_run(Path(tmp), documents, args.batch_size, "onnx", onnx_cache_dir=onnx_cache)
            )
        min_cosine = _min_cosine_onnx_vs_torch(texts, torch_vectors, args.batch_size, onnx_cache)
        onnx_rate = onnx_chunks / onnx_s
        emit(BENCH, "onnx_chunks_per_s", round(onnx_rate, 2), "chunks/s", chunks=onnx_chunks, int8=True)
        emit(BENCH, "onnx_min_cosine_vs_torch", round(min_cosine, 4), "cosine")
        results.update(onnx_chunks_per_s=round(onnx_rate, 2), onnx_ratio_vs_bare_encode=round(onnx_rate / bare_rate, 3),
                       onnx_min_cosine_vs_torch=round(min_cosine, 4))
    else:
        emit(BENCH, "onnx", f"skipped: {onnx_skipped}", "info")
        results.update(onnx_chunks_per_s=None, onnx_ratio_vs_bare_encode=None, onnx_min_cosine_vs_torch=None,
                       onnx_skipped=onnx_skipped)
    summary(BENCH, **results, batch_size=args.batch_size, **size, loadavg_1m=machine_state()["loadavg_1m"])


def _onnx_skipped(args: argparse.Namespace) -> str | None:
    """Why this run leaves the ONNX backend out (None: it runs it)."""
    if args.no_onnx:
        return "--no-onnx"
    if args.device != "cpu":
        return f"--device {args.device} (the ONNX backend runs on the CPU)"
    if args.smoke:
        return "smoke size (a first ONNX export takes ~15 s; --quick runs it)"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    return None


if __name__ == "__main__":
    main()
