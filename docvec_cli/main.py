"""`docvec` commands (SPEC section 3)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from common.errors import DocvecError, NotFound
from common.settings import Settings, load_settings
from common.urls import redact_url
from docvec import ApiError, AsyncClient, AuthenticationError, ConnectionFailed
from docvec.ingest import SourceError
from docvec_cli.auth import (
    API_KEY_ENV,
    admin_key_notice,
    admin_key_path,
    ensure_admin_key,
    read_key_file,
    resolve_api_key,
)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="docvec: documents in, searchable vector chunks out.")
tasks_app = typer.Typer(help="List, cancel or retry tasks.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
kbs_app = typer.Typer(help="Knowledge bases: reindex under new settings.", no_args_is_help=True)
app.add_typer(kbs_app, name="kbs")

API_URL_ENV = "DOCVEC_API_URL"
TASK_STATES = ("queued", "running", "done", "failed", "cancelled")
ApiOption = Annotated[str | None, typer.Option("--api", envvar=API_URL_ENV, help="URL of a running docvec API")]
KeyOption = Annotated[str | None, typer.Option("--key", envvar=API_KEY_ENV, show_default=False,
                                               help="API key for --api (default: <data_dir>/admin.key)")]


def _settings() -> Settings:
    try:
        return load_settings()
    except ValueError as exc:
        raise typer.BadParameter(f"invalid settings: {exc}") from exc


def _setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss.loader", "httpx"):  # library chatter, not operator information
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _api_client(api_url: str, api_key: str | None, timeout_s: float) -> AsyncClient:
    """The client for a running API, sending the key given, else the embedded admin key."""
    try:
        settings: Settings | None = load_settings()
    except ValueError:  # a broken settings file only loses the admin.key fallback here
        settings = None
    return AsyncClient(api_url, resolve_api_key(api_key, settings) or "", timeout_s=timeout_s)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except DocvecError as exc:
        _exit_with(exc)
    except ApiError as exc:
        err = Console(stderr=True)
        err.print(f"[red]error {exc.status_code}:[/red] {escape(exc.message)}")
        if isinstance(exc, AuthenticationError):
            err.print(f"pass an API key with --key or {API_KEY_ENV} (`docvec keys create --tenant T`)")
        raise typer.Exit(2) from None
    except (ConnectionFailed, SourceError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _exit_with(exc: DocvecError) -> NoReturn:
    """Print a typed error's message (never parsed as markup) and exit 2."""
    Console(stderr=True).print(f"[red]error:[/red] {escape(exc.message)}")
    raise typer.Exit(2) from exc


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the CLI stops the server and the worker together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _on_signals(callback: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)


@app.command()
def up(host: str = "127.0.0.1", port: int = 8000) -> None:
    """All in one: embedded Redis + API + vector store + one worker. Ctrl-C stops everything."""
    from common.memory import pin_mmap_threshold

    _setup_logging()
    pin_mmap_threshold()
    _run(_up(_settings(), host, port))


async def _up(settings: Settings, host: str, port: int) -> None:
    import vectordb
    from api.app import create_app
    from common.apikeys import ApiKeyStore
    from common.runtime import open_core
    from worker.consumer import Worker

    async with open_core(settings, freeze_heap=True) as core:
        key_path = admin_key_path(settings)
        admin_key, created = await asyncio.to_thread(
            lambda: ensure_admin_key(ApiKeyStore(core.repo.database), key_path)
        )
        vectors = vectordb.connect(settings.vectordb_uri, token=settings.vectordb.token)
        try:
            worker = Worker(core, vectors)
            # proxy_headers off: which proxy's X-Forwarded-Proto to believe is `api.trusted_proxies`'s
            # decision (the app's), not uvicorn's default trust of 127.0.0.1.
            server = _Server(uvicorn.Config(create_app(settings, core=core, vectors=vectors),
                                            host=host, port=port, log_level="info", proxy_headers=False))

            def stop() -> None:
                server.should_exit = True
                worker.stop()

            _on_signals(stop)
            console = Console()
            base = f"http://{host}:{port}"
            console.print(f"docvec is up: API {base}/api/v1  (OpenAPI: {base}/docs)", soft_wrap=True)
            console.print(f"dashboard: {base}/dashboard", soft_wrap=True)
            console.print(f"data dir: {settings.data_path}   redis: {redact_url(core.redis_url)}", soft_wrap=True,
                          markup=False)
            console.print(admin_key_notice(key_path, admin_key, created), soft_wrap=True, markup=False)
            async with asyncio.TaskGroup() as group:
                group.create_task(worker.run())
                await server.serve()
                worker.stop()
        finally:
            await vectors.close()


@app.command()
def worker(concurrency: Annotated[int | None, typer.Option(help="task slots")] = None,
           consumer: Annotated[str | None, typer.Option(help="consumer name (default host-pid-random)")] = None,
           ) -> None:
    """Run one worker process (stops gracefully on SIGTERM/SIGINT)."""
    from common.memory import pin_mmap_threshold
    from worker.main import run_worker

    _setup_logging()
    pin_mmap_threshold()
    _run(run_worker(_settings(), consumer=consumer, concurrency=concurrency))


@app.command()
def api(host: str | None = None, port: int | None = None) -> None:
    """Run the HTTP API alone (workers run as separate `docvec worker` processes). Like `docvec up`, it
    creates an admin key on first run (stored in `<data_dir>/admin.key`) and says where it is."""
    from api.app import create_app

    settings = _settings()
    _setup_logging()
    key_path = admin_key_path(settings)
    with _key_store(settings) as store:
        admin_key, created = ensure_admin_key(store, key_path, name="docvec api")
    Console().print(admin_key_notice(key_path, admin_key, created), soft_wrap=True, markup=False)
    server = _Server(uvicorn.Config(create_app(settings, freeze_heap=True), host=host or settings.api.host,
                                    port=port or settings.api.port, log_level="info",
                                    proxy_headers=False))  # `api.trusted_proxies` decides, in the app

    async def serve() -> None:
        def stop() -> None:
            server.should_exit = True

        _on_signals(stop)
        await server.serve()

    _run(serve())


@app.command("vectordb")
def vectordb_server(host: str = "127.0.0.1", port: int = 19530,
                    data: Annotated[str | None, typer.Option(help="data dir (default <data_dir>/vectors)")] = None,
                    token: Annotated[str | None, typer.Option(envvar="DOCVEC_VECTORDB__TOKEN",
                                                              help="required Bearer token")] = None,
                    insecure_no_token: Annotated[bool, typer.Option(
                        "--insecure-no-token", help="allow a non-loopback --host without a token "
                                                    "(trusted networks only)")] = False,
                    grpc_port: Annotated[int | None, typer.Option(
                        help="serve the Milvus gRPC protocol on this port of its own (default: on --port, "
                             "beside REST)")] = None) -> None:
    """Serve the vector store for a fleet of workers: Milvus's RESTful v2 API (a subset) and, on the same
    port, Milvus's gRPC protocol, so pymilvus (MilvusClient, the ORM) reaches it unchanged.

    A --host other than loopback needs a --token (or DOCVEC_VECTORDB__TOKEN) unless --insecure-no-token.
    """
    from vectordb.server import run_server

    settings = _settings()
    _setup_logging()
    try:
        run_server(data or str(settings.data_path / "vectors"), host=host, port=port,
                   token=token if token is not None else settings.vectordb.token,
                   insecure_no_token=insecure_no_token, grpc_port=grpc_port)
    except DocvecError as exc:
        _exit_with(exc)


@app.command()
def ingest(paths: Annotated[list[Path], typer.Argument(help="files or directories (recursive)")],
           kb: Annotated[str, typer.Option("--kb", help="knowledge base name (created if missing)")],
           wait: Annotated[bool, typer.Option("--wait", help="show progress until every document is done")] = False,
           sync: Annotated[bool, typer.Option(
               "--sync", help="also delete the knowledge base's documents whose files are gone from the directories"
           )] = False,
           dry_run: Annotated[bool, typer.Option(
               "--dry-run", help="print what would be added, updated, skipped and deleted; change nothing")] = False,
           source_id: Annotated[str | None, typer.Option(
               "--source-id", help="the document's key, for one file (default: its path under the directory "
                                  "named, or its file name)")] = None,
           follow_symlinks: Annotated[bool, typer.Option(
               "--follow-symlinks", help="follow symlinks that lead out of a directory named (default: left out "
                                         "and listed)")] = False,
           api_url: ApiOption = None, api_key: KeyOption = None) -> None:
    """Ingest documents as a sync: new files are added, changed ones updated in place, unchanged ones
    skipped (nothing re-embedded), documents a stopped run left unfinished are finished (in-process) or
    waited for (--wait). Without --api the pipeline runs in-process and returns when done.

    Files that cannot be read are listed at the end, and the exit status is 1.
    Names that are not UTF-8 or hold control characters get escaped keys (byte 0xff: \\xff, newline: \\n).
    """
    from docvec_cli import ingest as ingesting

    collected = ingesting.scan_sources(paths, source_id=source_id, sync=sync, follow_symlinks=follow_symlinks)
    console = Console()
    if api_url:
        report = _run(_ingest_api(api_url, api_key, collected, kb, sync=sync, dry_run=dry_run, wait=wait,
                                  console=console))
    else:
        _setup_logging(logging.WARNING)
        report = _run(ingesting.ingest_local(_settings(), collected, kb, sync=sync, dry_run=dry_run, wait=wait,
                                             console=console))
    code = report.print(console, dry_run=dry_run)
    if code:
        raise typer.Exit(code)


async def _ingest_api(api_url: str, api_key: str | None, sources: Any, kb_name: str, *, sync: bool,
                      dry_run: bool, wait: bool, console: Console) -> Any:
    from docvec_cli import ingest as ingesting

    async with _api_client(api_url, api_key, 120) as client:
        return await ingesting.ingest_api(client, sources, kb_name, sync=sync, dry_run=dry_run, wait=wait,
                                          console=console)


@kbs_app.command("reindex")
def kbs_reindex(kb: str,
                chunk_tokens: Annotated[int | None, typer.Option("--chunk-tokens", help="new chunk size")] = None,
                overlap_tokens: Annotated[int | None, typer.Option("--overlap-tokens", help="new overlap")] = None,
                api_url: ApiOption = None, api_key: KeyOption = None) -> None:
    """Re-chunk and re-embed every document of KB (new chunking settings, the configured embedding model);
    search serves each document's old chunks until its new ones are done. Without --api it runs in-process
    and returns when done."""
    from docvec_cli import ingest as ingesting

    console = Console()
    if api_url:
        task_ids = _run(_reindex_api(api_url, api_key, kb, chunk_tokens, overlap_tokens))
        console.print(f"reindexing {kb}: {len(task_ids)} documents queued")
        return
    _setup_logging(logging.WARNING)
    views = _run(ingesting.reindex_local(_settings(), kb, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens,
                                         wait=True, console=console))
    failed = [v for v in views.values() if v.status != "done"]
    console.print(f"reindexed {kb}: {len(views) - len(failed)}/{len(views)} documents done")
    if failed:
        raise typer.Exit(1)


async def _reindex_api(api_url: str, api_key: str | None, kb: str, chunk_tokens: int | None,
                       overlap_tokens: int | None) -> list[str]:
    async with _api_client(api_url, api_key, 120) as client:
        return await client.reindex(kb, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)


@app.command()
def search(query: str, kb: Annotated[str, typer.Option("--kb")], k: Annotated[int, typer.Option("-k")] = 5,
           api_url: ApiOption = None, api_key: KeyOption = None,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the top chunks for QUERY with their scores and sources."""
    import json

    if api_url:
        hits = _run(_search_api(api_url, api_key, query, kb, k))
    else:
        _setup_logging(logging.WARNING)
        hits = _run(_search_local(_settings(), query, kb, k))
    if as_json:
        typer.echo(json.dumps(hits, indent=2))
        return
    console = Console()
    if not hits:
        console.print("no results")
    for rank, hit in enumerate(hits, 1):
        where = hit["filename"] + (f" p.{hit['page']}" if hit.get("page") is not None else "")
        # Document text is printed literally: `array[/i]` in a chunk is text, not rich markup.
        console.print(f"[bold]{rank}. {hit['score']:.3f}[/bold]  {escape(where)}  [dim]{escape(hit['title'])}[/dim]")
        console.print("   " + hit["text"][:400].replace("\n", " ") + ("…" if len(hit["text"]) > 400 else ""),
                      markup=False, highlight=False)


async def _search_api(api_url: str, api_key: str | None, query: str, kb: str, k: int) -> list[dict[str, Any]]:
    async with _api_client(api_url, api_key, 60) as client:
        return [dataclasses.asdict(hit) for hit in await client.search(kb, query, top_k=k)]


async def _search_local(settings: Settings, query: str, kb_name: str, k: int) -> list[dict[str, Any]]:
    from dataclasses import asdict

    import vectordb
    from common.db import Repository, open_database
    from common.embedding.factory import build_embedder
    from lifecycle import documents as lifecycle
    from vectordb.chunkstore import ChunkStore

    database = await asyncio.to_thread(open_database, settings.db_url)
    try:
        repo = await asyncio.to_thread(Repository, database)
        kb = await asyncio.to_thread(repo.kbs.get, kb_name, tenant="default")
        embedder = await asyncio.to_thread(build_embedder, settings.embedding,
                                           onnx_cache_dir=settings.data_path / "onnx")
        vector = (await asyncio.to_thread(embedder.encode, [query], 1))[0]
        vectors = vectordb.connect(settings.vectordb_uri, token=settings.vectordb.token)
        try:
            hits = await lifecycle.search(repo, ChunkStore(vectors), kb, vector, k)
        finally:
            await vectors.close()
    finally:
        database.close()
    return [asdict(h) for h in hits]


async def _task_action(api_url: str | None, api_key: str | None, action: str, task_id: str) -> dict[str, Any]:
    if api_url:
        async with _api_client(api_url, api_key, 30) as client:
            act = client.cancel_task if action == "cancel" else client.retry_task
            return dataclasses.asdict(await act(task_id))
    from dataclasses import asdict

    from common.runtime import open_core
    from lifecycle import documents as lifecycle

    async with open_core(_settings()) as core:
        run = lifecycle.cancel if action == "cancel" else lifecycle.retry
        return asdict(await run(core, task_id))


@tasks_app.command("cancel")
def tasks_cancel(task_id: str, api_url: ApiOption = None, api_key: KeyOption = None) -> None:
    """Cancel a queued or running task."""
    task = _run(_task_action(api_url, api_key, "cancel", task_id))
    typer.echo(f"task {task['id']}: {task['status']}")


@tasks_app.command("retry")
def tasks_retry(task_id: str, api_url: ApiOption = None, api_key: KeyOption = None) -> None:
    """Re-run a failed or cancelled task."""
    task = _run(_task_action(api_url, api_key, "retry", task_id))
    typer.echo(f"task {task['id']}: {task['status']}")


@tasks_app.command("list")
def tasks_list(status: Annotated[str | None, typer.Option("--status", help="only tasks in this state")] = None,
               kb: Annotated[str | None, typer.Option("--kb", help="knowledge base name")] = None,
               limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
               api_url: ApiOption = None, api_key: KeyOption = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The newest tasks (of the key's tenant through --api; of the `default` tenant in-process)."""
    import json

    if status is not None and status not in TASK_STATES:
        raise typer.BadParameter(f"--status must be one of {', '.join(TASK_STATES)}")
    rows = _run(_tasks_list(api_url, api_key, status, kb, limit))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for t in rows:
        line = f"{t['id']}  {t['status']:<9} {float(t['progress']):>4.0%}  {t.get('stage') or '':<6}"
        typer.echo(line + (f"  {t['error']}" if t.get("error") else ""))
    if not rows:
        typer.echo("no tasks")


async def _tasks_list(api_url: str | None, api_key: str | None, status: str | None, kb: str | None,
                      limit: int) -> list[dict[str, Any]]:
    if api_url:
        async with _api_client(api_url, api_key, 30) as client:
            return [dataclasses.asdict(t) for t in await client.list_tasks(status=status, kb=kb, limit=limit)]
    from dataclasses import asdict

    from common.db import Repository, open_database

    settings = _settings()
    database = await asyncio.to_thread(open_database, settings.db_url)
    try:
        repo = await asyncio.to_thread(Repository, database)
        kb_id = (await asyncio.to_thread(repo.kbs.get, kb, tenant="default")).id if kb else None
        tasks = await asyncio.to_thread(repo.tasks.query, status=status, kb_id=kb_id, tenant="default", limit=limit)
    finally:
        database.close()
    return [asdict(t) for t in tasks]


@app.command()
def status(api_url: ApiOption = None, api_key: KeyOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="print the raw snapshot")] = False) -> None:
    """The dashboard's numbers: workers alive/late/dead, streams, task counts, throughput, warnings."""
    import json

    if api_url:
        snapshot = _run(_status_api(api_url, api_key))
    else:
        _setup_logging(logging.WARNING)
        snapshot = _run(_status_local(_settings()))
    if as_json:
        typer.echo(json.dumps(snapshot, indent=2, default=str))
        return
    from docvec_cli.status import print_status

    print_status(snapshot, Console())


async def _status_api(api_url: str, api_key: str | None) -> dict[str, Any]:
    async with _api_client(api_url, api_key, 30) as client:
        return await client.fleet()


async def _status_local(settings: Settings) -> dict[str, Any]:
    from common.fleet import fleet_snapshot
    from common.runtime import open_core

    async with open_core(settings) as core:
        return await fleet_snapshot(core)


@contextlib.contextmanager
def _key_store(settings: Settings) -> Iterator[Any]:
    """The API key store on the configured database (no Redis needed)."""
    from common.apikeys import ApiKeyStore
    from common.db import open_database

    database = open_database(settings.db_url)
    try:
        yield ApiKeyStore(database)
    finally:
        database.close()


@keys_app.command("create")
def keys_create(tenant: Annotated[str, typer.Option("--tenant", help="the tenant the key acts for")],
                admin: Annotated[bool, typer.Option("--admin", help="may also see the fleet and dashboard")] = False,
                name: Annotated[str, typer.Option("--name", help="a label for `docvec keys list`")] = "") -> None:
    """Create an API key; prints it alone on the last line (it is shown only this once)."""
    try:
        with _key_store(_settings()) as store:
            issued = store.create(tenant, admin=admin, name=name)
    except DocvecError as exc:
        raise typer.BadParameter(exc.message) from exc
    record = issued.record
    kind = "admin key" if record.is_admin else "key"
    typer.echo(f"created {kind} {record.id} for tenant {record.tenant!r}; store it now, it is not shown again:",
               err=True)
    typer.echo(issued.secret)


@keys_app.command("show-admin")
def keys_show_admin() -> None:
    """Print the admin key `docvec up` or `docvec api` created (from `<data_dir>/admin.key`), if still valid."""
    settings = _settings()
    path = admin_key_path(settings)
    key = read_key_file(path)
    if key is None:
        Console(stderr=True).print(f"no admin key in {path}; `docvec up` or `docvec api` creates one", markup=False)
        raise typer.Exit(1)
    with _key_store(settings) as store:
        record = store.authenticate(key)
    if record is None or not record.is_admin:
        Console(stderr=True).print(f"the key in {path} was revoked; the next `docvec up` creates a new one",
                                   markup=False)
        raise typer.Exit(1)
    typer.echo(key)


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option("--tenant")] = None,
              revoked: Annotated[bool, typer.Option("--revoked", help="include revoked keys")] = False) -> None:
    """List API keys (ids and display prefixes; the keys themselves are not stored)."""
    with _key_store(_settings()) as store:
        records = store.list_keys(tenant=tenant, include_revoked=revoked)
    for r in records:
        state = "revoked" if r.revoked_at else ("admin" if r.is_admin else "active")
        typer.echo(f"{r.id}  {r.prefix}…  {r.tenant:<20} {state:<8} {r.created_at:%Y-%m-%d %H:%M}  {r.name}")
    if not records:
        typer.echo("no keys")


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key at once."""
    try:
        with _key_store(_settings()) as store:
            record = store.revoke(key_id)
    except NotFound as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    typer.echo(f"revoked key {record.id} ({record.prefix}…) of tenant {record.tenant!r}")


def cli() -> Any:
    """The `docvec` command (typer's click command tree) with click-style help (`docvec_cli.helptext`)."""
    from docvec_cli.helptext import tidy

    return tidy(typer.main.get_command(app))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bars in CLI output
    cli()(prog_name="docvec")


if __name__ == "__main__":
    main()
