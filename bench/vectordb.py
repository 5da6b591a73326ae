"""Vector store benchmark: docvec's embedded store vs raw FAISS vs Milvus Lite, in one run, same data.

Data: a Gaussian mixture shaped like sentence embeddings (a few hundred centres of uneven
popularity, each cluster spread along its own low-rank subspace plus isotropic noise, nearest
neighbours at cosine ~0.5); queries are fresh draws from the same mixture, not copies of base rows.
Every system gets the same vectors and the same index: HNSW M=16, efConstruction=200, ef=64,
COSINE (FAISS: IndexHNSWFlat with inner product over unit vectors). Ground truth is exact cosine.

Per system: insert rows/s (batches of 1,000 rows as dicts, the API's form; docvec also as column
batches, ids plus one float32 matrix, the form its worker writes), time to searchable
(insert end -> flush/index built -> first search answered), single-query QPS (one query per call,
sequential), batched QPS (100 queries per call) and recall@10. `--server` adds docvec through its
HTTP server (a subprocess) and its ratios to embedded.

    python -m bench.vectordb [--quick | --smoke] [--server]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import by_size, emit, machine_state, size_flags, size_keys, summary

BENCH = "vectordb"
COLLECTION = "bench"
DIM = 384
K = 10
M = 16
EF_CONSTRUCTION = 200
EF_SEARCH = 64
INSERT_BATCH = 1_000
QUERY_BATCH = 100
EF_SWEEP = (96, 128, 192)
FLUSH_TIMEOUT_S = 600
# One sealed segment for the whole data set, as Milvus (1 GB segments) and Milvus Lite
# (MAX_SEGMENT_ROWS = 100,000) would hold it; docvec's default seal size is smaller.
SEAL_ROWS = 131_072


@dataclass(frozen=True, slots=True)
class Config:
    rows: int
    queries: int
    single_queries: int  # how many of the queries the one-per-call loops send
    centres: int
    seed: int = 7


@dataclass(slots=True)
class Result:
    """One system's figures; None where the system has no such step."""

    system: str
    insert_rows_per_s: float | None = None
    insert_columns_rows_per_s: float | None = None  # the same rows as ColumnBatches (docvec clients)
    time_to_searchable_s: float | None = None
    single_qps: float | None = None
    batched_qps: float | None = None
    recall_at_10: float | None = None
    batched_recall_at_10: float | None = None
    ef_sweep: dict[int, tuple[float, float]] | None = None  # ef -> (single-query QPS, recall@10)


# ---------------------------------------------------------------------------------------------- data


def make_data(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(base, queries), float32, drawn from one sentence-embedding-like mixture."""
    rng = np.random.default_rng(cfg.seed)
    rank = 64
    centres = rng.standard_normal((cfg.centres, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    popularity = 1.0 / np.arange(1, cfg.centres + 1) ** 0.7  # some topics are much more common
    popularity /= popularity.sum()
    total = cfg.rows + cfg.queries
    labels = rng.choice(cfg.centres, size=total, p=popularity)
    out = np.empty((total, DIM), dtype=np.float32)
    for c in range(cfg.centres):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        basis = rng.standard_normal((rank, DIM)).astype(np.float32) / np.sqrt(DIM)
        spread = rng.uniform(0.12, 0.20)
        latent = rng.standard_normal((len(members), rank)).astype(np.float32) * spread
        noise = rng.standard_normal((len(members), DIM)).astype(np.float32) * 0.04
        out[members] = centres[c] + latent @ basis + noise
    return out[: cfg.rows], out[cfg.rows :]


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def exact_top_k(base_unit: np.ndarray, queries_unit: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact cosine top-k of every query, (nq, k)."""
    out = np.empty((len(queries_unit), k), dtype=np.int64)
    for start in range(0, len(queries_unit), 100):
        scores = queries_unit[start : start + 100] @ base_unit.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        out[start : start + 100] = np.take_along_axis(part, order, axis=1)
    return out


def recall(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f[:K]) & set(t.tolist())) for f, t in zip(found, truth, strict=False))
    return hits / (len(found) * K)


def row_batches(base: np.ndarray) -> Iterator[list[dict[str, Any]]]:
    """Rows as API callers send them (dicts with a float list); built outside the timed calls."""
    for start in range(0, len(base), INSERT_BATCH):
        chunk = base[start : start + INSERT_BATCH]
        yield [{"id": start + i, "vector": v} for i, v in enumerate(chunk.tolist())]


# ---------------------------------------------------------------------------------------- measuring


def column_batches(base: np.ndarray) -> Iterator[Any]:
    """The same rows as docvec ColumnBatches: a range of ids and a slice of the float32 matrix."""
    from vectordb.base import ColumnBatch

    for start in range(0, len(base), INSERT_BATCH):
        chunk = base[start : start + INSERT_BATCH]
        yield ColumnBatch(ids=list(range(start, start + len(chunk))), vectors=chunk)


async def timed_inserts(insert: Callable[[Any], Awaitable[Any]], base: np.ndarray, *,
                        batches: Callable[[np.ndarray], Iterator[Any]] = row_batches) -> float:
    """Rows per second over the insert calls alone."""
    busy_s = 0.0
    for rows in batches(base):
        t0 = time.perf_counter()
        await insert(rows)
        busy_s += time.perf_counter() - t0
    return len(base) / busy_s


async def timed_single(
    search: Callable[[list[float]], Awaitable[list[int]]], queries: list[list[float]]
) -> tuple[float, list[list[int]]]:
    for q in queries[:5]:  # warm-up: caches, lazy loads, first-call paths
        await search(q)
    found = []
    t0 = time.perf_counter()
    for q in queries:
        found.append(await search(q))
    return len(queries) / (time.perf_counter() - t0), found


async def timed_batched(
    search: Callable[[list[list[float]]], Awaitable[list[list[int]]]], queries: list[list[float]]
) -> tuple[float, list[list[int]]]:
    await search(queries[:QUERY_BATCH])
    found: list[list[int]] = []
    t0 = time.perf_counter()
    for start in range(0, len(queries), QUERY_BATCH):
        found += await search(queries[start : start + QUERY_BATCH])
    return len(queries) / (time.perf_counter() - t0), found


def emit_result(r: Result) -> None:
    for metric, unit_name in (
        ("insert_rows_per_s", "rows/s"),
        ("insert_columns_rows_per_s", "rows/s"),
        ("time_to_searchable_s", "s"),
        ("single_qps", "queries/s"),
        ("batched_qps", "queries/s"),
        ("recall_at_10", "ratio"),
        ("batched_recall_at_10", "ratio"),
    ):
        value = getattr(r, metric)
        if value is not None:
            emit(BENCH, metric, round(value, 4 if "recall" in metric else 2), unit_name, system=r.system)


# -------------------------------------------------------------------------------------------- docvec


def docvec_schema() -> Any:
    from vectordb import CollectionSchema, DataType, FieldSchema

    return CollectionSchema(
        (
            FieldSchema("id", DataType.INT64, is_primary=True),
            FieldSchema("vector", DataType.FLOAT_VECTOR, dim=DIM),
        )
    )


def docvec_index() -> Any:
    from vectordb import IndexParams

    return IndexParams("HNSW", "COSINE", {"M": M, "efConstruction": EF_CONSTRUCTION})


DOCVEC_SEARCH_PARAMS = {"metric_type": "COSINE", "params": {"ef": EF_SEARCH}}


async def run_docvec(client: Any, system: str, base: np.ndarray, qlists: list[list[float]], single_n: int,
                     truth: np.ndarray, *, batched: bool = True) -> Result:
    """The same measurements through any docvec client (embedded or HTTP)."""
    result = Result(system)
    await client.create_collection(COLLECTION, docvec_schema(), index=docvec_index())
    result.insert_rows_per_s = await timed_inserts(lambda rows: client.insert(COLLECTION, rows), base)
    columns = COLLECTION + "_columns"  # the column-batch write path, into a collection of its own
    await client.create_collection(columns, docvec_schema(), index=docvec_index())
    result.insert_columns_rows_per_s = await timed_inserts(
        lambda batch: client.insert(columns, batch), base, batches=column_batches
    )
    await client.drop_collection(columns)

    async def search_one(q: list[float]) -> list[int]:
        hits = await client.search(COLLECTION, [q], limit=K, search_params=DOCVEC_SEARCH_PARAMS)
        return [h.id for h in hits[0]]

    async def search_many(qs: list[list[float]]) -> list[list[int]]:
        hits = await client.search(COLLECTION, qs, limit=K, search_params=DOCVEC_SEARCH_PARAMS)
        return [[h.id for h in per_query] for per_query in hits]

    t0 = time.perf_counter()
    await client.flush(COLLECTION)
    await search_one(qlists[0])
    result.time_to_searchable_s = time.perf_counter() - t0
    result.single_qps, found = await timed_single(search_one, qlists[:single_n])
    result.recall_at_10 = recall(found, truth[:single_n])
    if batched:
        result.batched_qps, found = await timed_batched(search_many, qlists)
        result.batched_recall_at_10 = recall(found, truth)
        result.ef_sweep = {}
        for ef in EF_SWEEP:  # for a comparison at equal recall with systems that search more segments

            async def search_ef(q: list[float], ef: int = ef) -> list[int]:
                params = {"metric_type": "COSINE", "params": {"ef": ef}}
                hits = await client.search(COLLECTION, [q], limit=K, search_params=params)
                return [h.id for h in hits[0]]

            qps, found = await timed_single(search_ef, qlists[:single_n])
            result.ef_sweep[ef] = (qps, recall(found, truth[:single_n]))
            point = {"ef": ef, "qps": round(qps, 2), "recall_at_10": round(result.ef_sweep[ef][1], 4)}
            emit(BENCH, "single_qps_at_ef", point, "queries/s", system=system)
    return result


def sync_single_qps(engine: Any, qlists: list[list[float]]) -> float:
    """Single-query QPS of the synchronous `Engine.search` called from one worker thread."""
    for q in qlists[:5]:
        engine.search(COLLECTION, [q], limit=K, search_params=DOCVEC_SEARCH_PARAMS)
    t0 = time.perf_counter()
    for q in qlists:
        engine.search(COLLECTION, [q], limit=K, search_params=DOCVEC_SEARCH_PARAMS)
    return len(qlists) / (time.perf_counter() - t0)


async def docvec_embedded(work: Path, base: np.ndarray, qlists: list[list[float]], single_n: int,
                          truth: np.ndarray) -> tuple[Result, Result]:
    import vectordb

    client = vectordb.connect(str(work / "docvec"), seal_rows=SEAL_ROWS)
    assert isinstance(client, vectordb.EmbeddedClient)
    try:
        result = await run_docvec(client, "docvec", base, qlists, single_n, truth)
        sync = Result("docvec_sync")  # same engine, sync API: no event-loop hop per query
        sync.single_qps = await asyncio.to_thread(sync_single_qps, client.engine, qlists[:single_n])
        return result, sync
    finally:
        await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def docvec_server(data_dir: Path) -> Iterator[str]:
    """`python -m vectordb.server` in a subprocess; stopped with SIGTERM at the end."""
    port = free_port()
    cmd = [sys.executable, "-m", "vectordb.server", "--data", str(data_dir), "--port", str(port),
           "--seal-rows", str(SEAL_ROWS), "--request-timeout-s", str(FLUSH_TIMEOUT_S)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                detail = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"vectordb server did not start: {detail}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def docvec_http(work: Path, base: np.ndarray, qlists: list[list[float]], single_n: int,
                      truth: np.ndarray) -> Result:
    import vectordb

    with docvec_server(work / "docvec-server") as url:
        client = vectordb.connect(url, timeout_s=FLUSH_TIMEOUT_S)  # flush builds the whole HNSW index
        try:
            return await run_docvec(client, "docvec_server", base, qlists, single_n, truth, batched=False)
        finally:
            await client.close()


# --------------------------------------------------------------------------------------------- FAISS


async def raw_faiss(base: np.ndarray, queries: np.ndarray, single_n: int, truth: np.ndarray) -> Result:
    import faiss

    result = Result("faiss")
    t0 = time.perf_counter()
    data = unit(base)  # COSINE = inner product over unit vectors; normalising is part of adding
    index = faiss.IndexHNSWFlat(DIM, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(data)
    index.hnsw.efSearch = EF_SEARCH
    result.time_to_searchable_s = time.perf_counter() - t0
    result.insert_rows_per_s = len(base) / result.time_to_searchable_s

    async def search_one(q: list[float]) -> list[int]:
        x = np.asarray([q], dtype=np.float32)
        faiss.normalize_L2(x)
        _, labels = index.search(x, K)
        return labels[0].tolist()  # type: ignore[no-any-return]

    async def search_many(qs: list[list[float]]) -> list[list[int]]:
        x = np.asarray(qs, dtype=np.float32)
        faiss.normalize_L2(x)
        _, labels = index.search(x, K)
        return labels.tolist()  # type: ignore[no-any-return]

    qlists = queries.tolist()
    result.single_qps, found = await timed_single(search_one, qlists[:single_n])
    result.recall_at_10 = recall(found, truth[:single_n])
    result.batched_qps, found = await timed_batched(search_many, qlists)
    result.batched_recall_at_10 = recall(found, truth)
    return result


# --------------------------------------------------------------------------------------- Milvus Lite


async def milvus_lite(work: Path, base: np.ndarray, qlists: list[list[float]], single_n: int,
                      truth: np.ndarray) -> Result:
    from pymilvus import DataType, MilvusClient  # type: ignore[import-untyped]

    result = Result("milvus_lite")
    client = MilvusClient(uri=str(work / "milvus.db"))
    try:
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE",
                               params={"M": M, "efConstruction": EF_CONSTRUCTION})
        client.create_collection(COLLECTION, schema=schema, index_params=index_params)
        search_params = {"metric_type": "COSINE", "params": {"ef": EF_SEARCH}}

        async def insert(rows: list[dict[str, Any]]) -> None:
            client.insert(COLLECTION, rows)

        async def search_one(q: list[float]) -> list[int]:
            res = client.search(COLLECTION, data=[q], limit=K, search_params=search_params)
            return [hit["id"] for hit in res[0]]

        async def search_many(qs: list[list[float]]) -> list[list[int]]:
            res = client.search(COLLECTION, data=qs, limit=K, search_params=search_params)
            return [[hit["id"] for hit in per_query] for per_query in res]

        result.insert_rows_per_s = await timed_inserts(insert, base)
        t0 = time.perf_counter()
        client.flush(COLLECTION)
        client.load_collection(COLLECTION)
        wait_for_milvus_lite_indexes(work / "milvus.db")
        await search_one(qlists[0])
        result.time_to_searchable_s = time.perf_counter() - t0
        result.single_qps, found = await timed_single(search_one, qlists[:single_n])
        result.recall_at_10 = recall(found, truth[:single_n])
        result.batched_qps, found = await timed_batched(search_many, qlists)
        result.batched_recall_at_10 = recall(found, truth)
    finally:
        client.close()
    return result


def wait_for_milvus_lite_indexes(db_path: Path) -> None:
    """Milvus Lite builds segment indexes on a background thread after a flush and answers by brute
    force until then, while `describe_index` always says Finished. Its server runs in this process:
    wait on its background queue (a private hook) so "searchable" means "indexed" for every system."""
    from milvus_lite.server_manager import server_manager_instance  # type: ignore[import-untyped]

    _server, db, _port = server_manager_instance._servers[os.path.abspath(db_path)]
    db.get_collection(COLLECTION)._wait_for_bg()


def milvus_versions() -> dict[str, str] | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        import milvus_lite  # type: ignore[import-untyped]  # noqa: F401
        import pymilvus  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return None
    try:
        return {"pymilvus": version("pymilvus"), "milvus_lite": version("milvus-lite")}
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- main


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


async def run(cfg: Config, with_server: bool, size: dict[str, bool]) -> None:
    emit(BENCH, "machine", machine_state(), "info")
    emit(BENCH, "config", {
        "rows": cfg.rows, "dim": DIM, "queries": cfg.queries, "single_queries": cfg.single_queries,
        "k": K, "data": f"gaussian mixture, {cfg.centres} centres, low-rank clusters, queries from the same mixture",
        "index": {"type": "HNSW", "M": M, "efConstruction": EF_CONSTRUCTION, "ef": EF_SEARCH, "metric": "COSINE"},
        "insert_batch": INSERT_BATCH, "query_batch": QUERY_BATCH, "docvec_seal_rows": SEAL_ROWS,
        "docvec_fsync": True, "faiss_omp_threads": _omp_threads(),
    }, "info")
    t0 = time.perf_counter()
    base, queries = make_data(cfg)
    truth = exact_top_k(unit(base), unit(queries), K)
    qlists = queries.tolist()
    emit(BENCH, "data_prep_s", round(time.perf_counter() - t0, 2), "s")

    results: dict[str, Result] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-vectordb-"))
    try:
        results["docvec"], results["docvec_sync"] = await docvec_embedded(
            work, base, qlists, cfg.single_queries, truth
        )
        emit_result(results["docvec"])
        emit_result(results["docvec_sync"])
        results["faiss"] = await raw_faiss(base, queries, cfg.single_queries, truth)
        emit_result(results["faiss"])
        versions = milvus_versions()
        if versions is None:
            emit(BENCH, "milvus_lite", "pymilvus/milvus-lite cannot be imported: skipped "
                 "(pip install pymilvus milvus-lite)", "info", system="milvus_lite")
        else:
            emit(BENCH, "milvus_lite_versions", versions, "info", system="milvus_lite")
            results["milvus_lite"] = await milvus_lite(work, base, qlists, cfg.single_queries, truth)
            emit_result(results["milvus_lite"])
        if with_server:
            try:
                results["docvec_server"] = await docvec_http(work, base, qlists, cfg.single_queries, truth)
                emit_result(results["docvec_server"])
            except Exception as e:  # report it and still print the summary of the other systems
                emit(BENCH, "docvec_server_error", f"{type(e).__name__}: {e}", "info", system="docvec_server")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    d, f = results["docvec"], results["faiss"]
    ml = results.get("milvus_lite", Result("milvus_lite"))
    out: dict[str, Any] = {
        "rows": cfg.rows,
        "dim": DIM,
        "recall_at_10": rounded(d.recall_at_10, 4),
        "insert_rows_per_s": rounded(d.insert_rows_per_s),
        "insert_columns_rows_per_s": rounded(d.insert_columns_rows_per_s),
        "columns_vs_rows_insert_ratio": ratio(d.insert_columns_rows_per_s, d.insert_rows_per_s),
        "columns_insert_ratio_vs_milvus_lite": ratio(d.insert_columns_rows_per_s, ml.insert_rows_per_s),
        "search_qps": rounded(d.single_qps),
        "batched_search_qps": rounded(d.batched_qps),
        "qps_ratio_vs_faiss": ratio(d.single_qps, f.single_qps),
        "qps_ratio_vs_milvus_lite": ratio(d.single_qps, ml.single_qps),
        "insert_ratio_vs_milvus_lite": ratio(d.insert_rows_per_s, ml.insert_rows_per_s),
        "milvus_lite_recall_at_10": rounded(ml.recall_at_10, 4),
        "faiss_recall_at_10": rounded(f.recall_at_10, 4),
        "faiss_search_qps": rounded(f.single_qps),
        "milvus_lite_search_qps": rounded(ml.single_qps),
        "milvus_lite_insert_rows_per_s": rounded(ml.insert_rows_per_s),
        "sync_search_qps": rounded(results["docvec_sync"].single_qps),
        "sync_qps_ratio_vs_faiss": ratio(results["docvec_sync"].single_qps, f.single_qps),
        "faiss_batched_search_qps": rounded(f.batched_qps),
        "milvus_lite_batched_search_qps": rounded(ml.batched_qps),
        "batched_qps_ratio_vs_faiss": ratio(d.batched_qps, f.batched_qps),
        "batched_qps_ratio_vs_milvus_lite": ratio(d.batched_qps, ml.batched_qps),
        "time_to_searchable_s": {
            name: rounded(r.time_to_searchable_s) for name, r in results.items() if r.time_to_searchable_s is not None
        },
        "milvus_lite": "ok" if "milvus_lite" in results else "not installed",
        "loadavg_1m": machine_state()["loadavg_1m"],
        **size,
    }
    if d.ef_sweep and ml.recall_at_10 is not None:
        # The smallest ef at which docvec's recall is at least Milvus Lite's (ef 64) recall.
        sweep = {EF_SEARCH: (d.single_qps or 0.0, d.recall_at_10 or 0.0), **d.ef_sweep}
        matched = [ef for ef, (_, r) in sorted(sweep.items()) if r >= ml.recall_at_10]
        if matched:
            qps, rec = sweep[matched[0]]
            out |= {
                "equal_recall_ef": matched[0],
                "equal_recall_search_qps": rounded(qps),
                "equal_recall_recall_at_10": rounded(rec, 4),
                "qps_ratio_vs_milvus_lite_at_equal_recall": ratio(qps, ml.single_qps),
            }
    if "docvec_server" in results:
        s = results["docvec_server"]
        out |= {
            "server_insert_rows_per_s": rounded(s.insert_rows_per_s),
            "server_search_qps": rounded(s.single_qps),
            "server_recall_at_10": rounded(s.recall_at_10, 4),
            "server_insert_ratio_vs_embedded": ratio(s.insert_rows_per_s, d.insert_rows_per_s),
            "server_qps_ratio_vs_embedded": ratio(s.single_qps, d.single_qps),
        }
    summary(BENCH, **out)


def _omp_threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vectordb", description=__doc__.splitlines()[0])
    size_flags(parser, "20,000 rows and 200 queries (under 60 s on 2 cores)")
    parser.add_argument("--server", action="store_true", help="also measure docvec through its HTTP server")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--queries", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = by_size(args, full=Config(rows=100_000, queries=1_000, single_queries=1_000, centres=300),
                  quick=Config(rows=20_000, queries=200, single_queries=200, centres=200),
                  smoke=Config(rows=2_000, queries=100, single_queries=50, centres=20))
    if args.rows or args.queries:
        queries = args.queries or cfg.queries
        cfg = Config(rows=args.rows or cfg.rows, queries=queries, single_queries=queries, centres=cfg.centres)
    asyncio.run(run(cfg, args.server, size_keys(args)))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
