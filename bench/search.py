"""Search latency through a running docvec API vs Milvus Lite and Chroma, same embedder, same data.

docvec: `docvec up` in its own process (API + worker + embedded Redis + vector store on a scratch data
dir); the corpus is ingested through the API (`docvec ingest --api`), then clients, each its own
process as a service's clients are, send `POST /api/v1/kbs/{kb}/search` over HTTP — query
embedding, the vector search and the live-version check included. Milvus Lite (pymilvus, a local
`.db`) and Chroma (a persistent client), libraries that live in their application's process, get the
very chunks docvec made (docvec's parser and chunker) with their title-weighted vectors from the same
bundled model, and each query is embedded by that model in the client, as an application using them
would (`SentenceTransformer.encode`, torch on all the cores; `--peer-embedder docvec` gives them
docvec's own torch embedder instead: the same vectors, a leaner forward). Each system
answers the same queries at 1, 8 and 32 concurrent clients: p50 / p99 latency and QPS.

Corpus: `--corpus DIR`, by default the library reference of Debian's `python3-doc`; queries are the
corpus's section headings (natural, short questions of a reader), in a seeded order.

    python -m bench.search [--quick | --smoke] [--corpus DIR] [--documents N] [--peer-embedder docvec]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BareModel,
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

BENCH = "search"
CONCURRENCY = (1, 8, 32)
TOP_K = 5
KB = "bench"
COLLECTION = "bench_chunks"
FIGURES = ("p50_ms", "p99_ms", "qps")
PEERS = {"milvus_lite": ("pymilvus", "milvus_lite"), "chroma": ("chromadb",)}  # the modules each peer needs
INSTALL_HINT = {"milvus_lite": "pip install -e '.[dev]' (or: pip install pymilvus milvus-lite)",
                "chroma": "pip install -e '.[bench]' (or: pip install chromadb)"}



def _chunks(files: list[Path]) -> tuple[list[str], list[str], np.ndarray]:
    """docvec's chunks of `files` (texts, titles) and their title-weighted vectors, as its worker makes them."""
    from common.chunking import Chunker
    from common.embedding.factory import build_embedder, weighted_vectors
    from common.parsing import parse_document
    from common.settings import Settings

    settings = Settings()
    embedder = build_embedder(settings.embedding)
    chunker = Chunker.for_model(embedder, settings.chunking.chunk_tokens, settings.chunking.overlap_tokens)
    texts: list[str] = []
    titles: list[str] = []
    for path in files:
        for chunk in chunker.chunk(parse_document(path.read_bytes(), path.name, limits=settings.limits)):
            texts.append(chunk.text)
            titles.append(chunk.title)
    vectors = weighted_vectors(embedder, titles, texts, settings.embedding.title_weight, settings.embedding.batch_size)
    return texts, titles, vectors


def _queries(titles: list[str], count: int, seed: int = 7) -> list[str]:
    headings = list(dict.fromkeys(t.split(" > ")[-1].strip() for t in titles if t))
    headings = [h for h in headings if 3 <= len(h) <= 120]
    random.Random(seed).shuffle(headings)
    if not headings:
        raise SystemExit("the corpus has no section headings to ask about")
    return [headings[i % len(headings)] for i in range(count)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DocvecServer:
    """`docvec up` on a scratch data dir, stopped (SIGINT, then kill) on exit."""

    def __init__(self, data_dir: Path, settings: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Embedded defaults (Redis, SQLite, local files, vector store) on the scratch dir.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCVEC_")}
        self.env["DOCVEC_DATA_DIR"] = str(data_dir)
        self.env.update(settings)
        self._proc: subprocess.Popen[bytes] | None = None
        self.key = ""

    def __enter__(self) -> DocvecServer:
        import httpx

        log = open(self.data_dir / "up.log", "wb")  # noqa: SIM115 - closed with the process
        self._proc = subprocess.Popen([sys.executable, "-m", "docvec_cli", "up", "--port", str(self.port)],
                                      env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docvec up exited: {(self.data_dir / 'up.log').read_text()[-2000:]}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
                if ready and (self.data_dir / "admin.key").exists():
                    self.key = (self.data_dir / "admin.key").read_text().strip()
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("docvec up did not become ready in 180 s")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(2)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def ingest(self, files: list[Path], scratch: Path) -> None:
        source = scratch / "corpus"
        source.mkdir()
        for path in files:
            (source / path.name).write_bytes(path.read_bytes())
        subprocess.run([sys.executable, "-m", "docvec_cli", "ingest", str(source), "--kb", KB, "--wait",
                        "--api", self.url, "--key", self.key], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)


def _measure(search: Callable[[str], Any], queries: list[str], clients: int) -> dict[str, float]:
    """Run `queries` through `clients` threads, each one request at a time; latency per request."""
    latencies: list[float] = []
    lock = threading.Lock()
    share = [queries[i::clients] for i in range(clients)]

    def client(mine: list[str]) -> None:
        own: list[float] = []
        for q in mine:
            t0 = time.perf_counter()
            search(q)
            own.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(own)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, share))
    wall = time.perf_counter() - started
    return _figures(latencies, wall)


def _figures(latencies: list[float], wall: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "qps": round(len(latencies) / wall, 1), "queries": len(latencies)}


def _http_client(url: str, key: str) -> None:
    """One docvec client process (`--client`): queries on stdin, one warm-up, then 'ready'; on 'go' it
    sends them one at a time over one keep-alive connection and prints the latencies (s) as JSON."""
    import httpx

    queries = json.loads(sys.stdin.readline())
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        def search(q: str) -> None:
            response = client.post(f"/api/v1/kbs/{KB}/search", json={"query": q, "top_k": TOP_K})
            response.raise_for_status()
            if not response.json()["hits"]:
                raise RuntimeError(f"docvec found nothing for {q!r}")

        search(queries[0])
        print("ready", flush=True)
        sys.stdin.readline()
        latencies = []
        for q in queries:
            t0 = time.perf_counter()
            search(q)
            latencies.append(time.perf_counter() - t0)
    print(json.dumps(latencies), flush=True)


def _measure_processes(server: DocvecServer, queries: list[str], clients: int) -> dict[str, float]:
    """`_measure` for docvec with each client in its own process, as a service's clients are: client
    threads of one Python process (the bench's, which also holds a model and two peers) share its GIL,
    and their HTTP and JSON work then queues behind one another and shows up as the server's latency
    (measured with --quick: c8 p99 412-482 ms in threads vs 240-280 ms in processes, the server's own
    p99 ~290 ms)."""
    procs = [subprocess.Popen([sys.executable, "-m", "bench.search", "--client", server.url, server.key],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    try:
        for i, proc in enumerate(procs):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(queries[i::clients]) + "\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a docvec client process failed to start")
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        latencies = [x for proc in procs for x in json.loads(proc.communicate(timeout=600)[0])]
        wall = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return _figures(latencies, wall)


def _embedder(kind: str) -> Any:
    """The peers' query embedder: the model as an application calls it (`BareModel`), or with
    `--peer-embedder docvec` docvec's own torch embedder (leaner; torch on all the cores)."""
    if kind == "sentence-transformers":
        return BareModel()
    from common.embedding.factory import build_embedder
    from common.settings import EmbeddingSettings

    embedder = build_embedder(EmbeddingSettings(torch_threads=os.cpu_count() or 1))
    embedder.encode(["warm up"], 1)
    return embedder


def _milvus_lite(work: Path, texts: list[str], vectors: np.ndarray, embedder: Any) -> tuple[Callable[[str], Any], Any]:
    from pymilvus import DataType, MilvusClient  # type: ignore[import-untyped]

    client = MilvusClient(uri=str(work / "milvus.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    schema.add_field("text", DataType.VARCHAR, max_length=65_535)
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(COLLECTION, schema=schema, index_params=index_params)
    rows = [{"id": i, "vector": v.tolist(), "text": t} for i, (t, v) in enumerate(zip(texts, vectors, strict=True))]
    for start in range(0, len(rows), 500):
        client.insert(COLLECTION, rows[start:start + 500])
    client.flush(COLLECTION)
    client.load_collection(COLLECTION)

    def search(q: str) -> Any:
        vector = embedder.encode([q], 1)[0]
        hits = client.search(COLLECTION, data=[vector.tolist()], limit=TOP_K, output_fields=["text"])[0]
        if not hits:
            raise RuntimeError(f"Milvus Lite found nothing for {q!r}")
        return hits

    return search, client


def _chroma(work: Path, texts: list[str], vectors: np.ndarray, embedder: Any) -> tuple[Callable[[str], Any], Any]:
    import chromadb  # type: ignore[import-not-found]
    from chromadb.config import Settings as ChromaSettings  # type: ignore[import-not-found]

    client = chromadb.PersistentClient(path=str(work / "chroma"), settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.create_collection(COLLECTION, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    ids = [str(i) for i in range(len(texts))]
    for start in range(0, len(ids), 500):
        collection.add(ids=ids[start:start + 500], embeddings=vectors[start:start + 500],
                       documents=texts[start:start + 500])

    def search(q: str) -> Any:
        vector = embedder.encode([q], 1)[0]
        result = collection.query(query_embeddings=[vector], n_results=TOP_K, include=["documents", "distances"])
        if not result["ids"][0]:
            raise RuntimeError(f"Chroma found nothing for {q!r}")
        return result

    return search, client


def _run_all(name: str, measure: Callable[[list[str], int], dict[str, float]], queries: dict[int, list[str]],
             results: dict[str, dict[int, dict[str, float]]]) -> None:
    measure(queries[1][:10], 1)  # warm up: connections, the model, caches
    results[name] = {}
    for clients in CONCURRENCY:
        figures = measure(queries[clients], clients)
        results[name][clients] = figures
        emit(BENCH, f"{name}_c{clients}", figures, "ms/qps", clients=clients)


def _skipped(peer: str, skip: list[str]) -> str | None:
    """Why this run leaves `peer` out (None: it runs it)."""
    if peer in skip:
        return "--skip"
    missing = [module for module in PEERS[peer] if importlib.util.find_spec(module) is None]
    return f"{', '.join(missing)} not installed: {INSTALL_HINT[peer]}" if missing else None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search")
    size_flags(parser, "a small corpus and fewer queries (about 2-3 minutes)")
    parser.add_argument("--corpus", type=Path, help="a directory of real documents (default: python3-doc's HTML; "
                        "generated prose with --smoke)")
    parser.add_argument("--documents", type=int, help="files of the corpus (default 60; quick 20; smoke 3)")
    parser.add_argument("--max-bytes", type=int, default=64_000)
    parser.add_argument("--queries", type=int, help="queries per concurrency level (default 480; quick 160; smoke 32)")
    parser.add_argument("--skip", action="append", default=[], choices=["milvus_lite", "chroma"],
                        help="leave a peer out")
    parser.add_argument("--peer-embedder", choices=["sentence-transformers", "docvec"],
                        default="sentence-transformers",
                        help="how the peers embed queries: SentenceTransformer.encode as an application calls "
                             "it (default), or docvec's own torch embedder")
    parser.add_argument("--set", action="append", default=[], metavar="DOCVEC_SECTION__KEY=VALUE",
                        help="a setting for the docvec server (e.g. DOCVEC_EMBEDDING__BACKEND=onnx)")
    parser.add_argument("--client", nargs=2, metavar=("URL", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        _http_client(*args.client)
        return
    count = args.documents or by_size(args, full=60, quick=20, smoke=3)
    per_level = args.queries or by_size(args, full=480, quick=160, smoke=max(CONCURRENCY))
    if per_level < max(CONCURRENCY):
        raise SystemExit(f"--queries must be at least {max(CONCURRENCY)}: every client sends one or more")
    emit(BENCH, "machine", machine_state(), "info")
    skipped = {peer: why for peer in PEERS if (why := _skipped(peer, args.skip)) is not None}
    for peer, why in skipped.items():
        emit(BENCH, peer, f"skipped: {why}", "info")
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="docvec-bench-search-") as tmp:
        work = Path(tmp)
        # A smoke run without --corpus gets generated prose: no package to install.
        generated = args.smoke and args.corpus is None
        corpus = generated_corpus(work / "generated", count) if generated else default_corpus(args.corpus)
        files = corpus_files(corpus, count, args.max_bytes)
        texts, titles, vectors = _chunks(files)
        pool = _queries(titles, per_level)
        queries = {c: pool for c in CONCURRENCY}
        emit(BENCH, "corpus", {"path": "generated" if generated else str(corpus), "files": len(files),
                               "chunks": len(texts), "queries_per_level": per_level,
                               "distinct_queries": len(set(pool)), "peer_embedder": args.peer_embedder}, "info")
        (work / "docvec").mkdir()
        overrides = dict(item.split("=", 1) for item in args.set)
        if any(not k.startswith("DOCVEC_") for k in overrides):
            raise SystemExit("--set takes DOCVEC_SECTION__KEY=VALUE")
        with DocvecServer(work / "docvec", overrides) as server:
            started = time.perf_counter()
            server.ingest(files, work)
            emit(BENCH, "docvec_ingest_s", round(time.perf_counter() - started, 1), "s")
            _run_all("docvec", lambda qs, n: _measure_processes(server, qs, n), queries, results)
        embedder = _embedder(args.peer_embedder) if len(skipped) < len(PEERS) else None
        if "milvus_lite" not in skipped:
            (work / "milvus").mkdir()
            ml_search, ml_client = _milvus_lite(work / "milvus", texts, vectors, embedder)
            try:
                _run_all("milvus_lite", lambda qs, n: _measure(ml_search, qs, n), queries, results)
            finally:
                ml_client.close()
        if "chroma" not in skipped:
            ch_search, _ = _chroma(work, texts, vectors, embedder)
            _run_all("chroma", lambda qs, n: _measure(ch_search, qs, n), queries, results)

    flat: dict[str, Any] = {f"{name}_c{c}_{k}": v for name, levels in results.items() for c, figs in levels.items()
            for k, v in figs.items() if k != "queries"}
    for peer, why in skipped.items():  # its keys, empty, and why
        flat |= {f"{peer}_c{c}_{k}": None for c in CONCURRENCY for k in FIGURES} | {f"{peer}_skipped": why}
    peers = [n for n in ("milvus_lite", "chroma") if n in results]
    best_peer_p99 = min((results[n][8]["p99_ms"] for n in peers), default=None)
    verdict: dict[str, Any] = {}
    if best_peer_p99 is not None:
        verdict = {"best_peer_p99_ms_c8": best_peer_p99,
                   "docvec_p99_c8_vs_best_peer": round(results["docvec"][8]["p99_ms"] / best_peer_p99, 3),
                   "goal_met": results["docvec"][8]["p99_ms"] <= best_peer_p99}
    emit(BENCH, "table", {n: {str(c): f for c, f in lv.items()} for n, lv in results.items()}, "ms/qps")
    summary(BENCH, chunks=len(texts), files=len(files), **flat, **verdict, **size_keys(args),
            loadavg_1m=machine_state()["loadavg_1m"])


if __name__ == "__main__":
    main()
