"""Repository tests, run against SQLite, PostgreSQL and MariaDB (each test in a fresh schema/database)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playhouse.pool import PooledSqliteDatabase

from common.db import Repository, TaskStatus, open_database
from common.errors import Conflict, InvalidRequest, NotFound
from tests.dbcalls import claim_one, complete_one, progress_one

PG_ADMIN = {
    "host": os.environ.get("DOCVEC_TEST_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("DOCVEC_TEST_PG_PORT", "5432")),
    "user": os.environ.get("DOCVEC_TEST_PG_USER", "postgres"),
    "dbname": os.environ.get("DOCVEC_TEST_PG_DB", "test"),
}
MYSQL_ADMIN = {
    "host": os.environ.get("DOCVEC_TEST_MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("DOCVEC_TEST_MYSQL_PORT", "3306")),
    "user": os.environ.get("DOCVEC_TEST_MYSQL_USER", "root"),
    "password": os.environ.get("DOCVEC_TEST_MYSQL_PASSWORD", ""),
}


def _unreachable(what: str, exc: Exception) -> None:
    """Skip when a server is missing locally; in CI a missing server is a failure."""
    message = f"{what} not reachable ({exc}); set up the server or the DOCVEC_TEST_* variables"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'sub' / 'docvec.db'}"


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(connect_timeout=3, **PG_ADMIN)
    except psycopg2.OperationalError as exc:
        _unreachable("PostgreSQL", exc)
    admin.autocommit = True
    schema = f"docvec_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    a = PG_ADMIN
    try:
        yield (
            f"postgresql://{a['user']}@{a['host']}:{a['port']}/{a['dbname']}?options=-csearch_path%3D{schema}"
        )
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    pymysql = pytest.importorskip("pymysql")
    try:
        admin = pymysql.connect(connect_timeout=3, autocommit=True, **MYSQL_ADMIN)
    except pymysql.err.OperationalError as exc:
        _unreachable("MariaDB/MySQL", exc)
    name = f"docvec_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    a = MYSQL_ADMIN
    password = f":{a['password']}" if a["password"] else ""
    try:
        yield f"mysql://{a['user']}{password}@{a['host']}:{a['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def repo(request: pytest.FixtureRequest) -> Iterator[Repository]:
    url = request.getfixturevalue(f"{request.param}_url")
    repository = Repository(open_database(url))
    try:
        yield repository
    finally:
        repository.close()


def _kb(repo: Repository, name: str = "docs", tenant: str = "default"):
    return repo.kbs.create(
        name, tenant=tenant, chunk_tokens=256, overlap_tokens=32, embedding_model="minilm", dim=384
    )


def _doc(repo: Repository, kb, filename: str = "a.txt", priority: str = "normal", *, source_id: str | None = None,
         sha256: str = "0" * 64):
    """A new document (its own source key unless `source_id` is given) and its first task."""
    submitted = repo.documents.submit(
        kb, source_id=source_id or uuid.uuid4().hex, filename=filename, size_bytes=10, sha256=sha256,
        blob_key=f"kb/{kb.id}/{uuid.uuid4().hex}", priority=priority,
    )
    return submitted.document, submitted.task


# ---------------------------------------------------------------------------------------------- open


def test_open_sqlite_creates_parent_and_uses_wal(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'a' / 'b' / 'x.db'}")
    assert isinstance(db, PooledSqliteDatabase)
    try:
        assert (tmp_path / "a" / "b").is_dir()
        with db:
            assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
            assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        db.close_all()


@pytest.mark.parametrize("url", ["redis://x/y", "sqlite:///:memory:", "postgresql://u@h:1/"])
def test_open_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_database(url)


def test_two_repositories_on_two_databases(tmp_path: Path) -> None:
    one = Repository(open_database(f"sqlite:///{tmp_path / 'one.db'}"))
    two = Repository(open_database(f"sqlite:///{tmp_path / 'two.db'}"))
    try:
        _kb(one, "only-in-one")
        assert [k.name for k in one.kbs.of_tenant()] == ["only-in-one"]
        assert two.kbs.of_tenant() == []
    finally:
        one.close()
        two.close()


# ---------------------------------------------------------------------------------------------- kbs


def test_kb_crud(repo: Repository) -> None:
    kb = _kb(repo)
    assert len(kb.id) == 32 and kb.collection == f"kb_{kb.id}"
    assert kb.created_at.tzinfo is UTC
    assert repo.kbs.get("docs") == kb
    assert repo.kbs.get_by_id(kb.id) == kb
    other = _kb(repo, "docs", tenant="acme")  # same name, other tenant
    assert [k.id for k in repo.kbs.of_tenant()] == [kb.id]
    assert [k.id for k in repo.kbs.of_tenant(tenant="acme")] == [other.id]
    with pytest.raises(Conflict):
        _kb(repo)
    with pytest.raises(NotFound):
        repo.kbs.get("docs", tenant="nobody")
    with pytest.raises(NotFound):
        repo.kbs.get_by_id("missing")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "a/b", "é"])
def test_kb_name_validation(sqlite_url: str, name: str) -> None:
    repo = Repository(open_database(sqlite_url))
    try:
        with pytest.raises(InvalidRequest):
            _kb(repo, name)
    finally:
        repo.close()


def test_delete_kb_removes_documents_and_tasks(repo: Repository) -> None:
    kb = _kb(repo)
    keep = _kb(repo, "keep")
    doc, task = _doc(repo, kb)
    kept_doc, kept_task = _doc(repo, keep)
    repo.kbs.delete(kb.id)
    with pytest.raises(NotFound):
        repo.kbs.get_by_id(kb.id)
    with pytest.raises(NotFound):
        repo.documents.get(doc.id)
    with pytest.raises(NotFound):
        repo.tasks.get(task.id)
    assert repo.tasks.get(kept_task.id).id == kept_task.id
    with pytest.raises(NotFound):
        repo.kbs.delete(kb.id)


# ---------------------------------------------------------------------------------------------- documents


def test_create_document_and_first_task(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb, priority="high")
    assert doc.status == TaskStatus.QUEUED and doc.parse_version == 0 and doc.next_parse_version == 1
    assert doc.kb_id == kb.id and doc.tenant == kb.tenant and doc.format is None
    assert task.document_id == doc.id and task.kb_id == kb.id and task.priority == "high"
    assert (task.status, task.parse_version, task.version, task.attempts) == (TaskStatus.QUEUED, 1, 1, 0)
    assert task.stream_id is None and task.stage_timings == {}
    assert repo.documents.get(doc.id) == doc
    assert repo.tasks.get(task.id) == task
    assert repo.tasks.of_document(doc.id) == [task]
    with pytest.raises(InvalidRequest):
        _doc(repo, kb, priority="urgent")


def test_list_and_delete_documents(repo: Repository) -> None:
    kb = _kb(repo)
    docs = [_doc(repo, kb, f"{i}.txt")[0] for i in range(3)]
    listed = repo.documents.of_kb(kb.id)
    assert {d.id for d in listed} == {d.id for d in docs}
    assert len(repo.documents.of_kb(kb.id, limit=2)) == 2
    assert len(repo.documents.of_kb(kb.id, limit=2, offset=2)) == 1
    repo.documents.delete(docs[0].id)
    assert repo.tasks.query(kb_id=kb.id, limit=10).__len__() == 2
    with pytest.raises(NotFound):
        repo.documents.delete(docs[0].id)


def test_reparse(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    with pytest.raises(Conflict):
        repo.documents.reparse(doc.id)
    claimed = claim_one(repo, task.id, "w1")
    assert claimed is not None
    assert complete_one(repo, task.id, claimed.version, chunk_count=3, token_count=30, format="txt")
    second = repo.documents.reparse(doc.id, priority="high")
    assert (second.parse_version, second.version, second.priority) == (2, 1, "high")
    doc_now = repo.documents.get(doc.id)
    assert (doc_now.parse_version, doc_now.next_parse_version, doc_now.status) == (1, 2, TaskStatus.QUEUED)
    assert [t.id for t in repo.tasks.of_document(doc.id)] == [second.id, task.id]
    with pytest.raises(NotFound):
        repo.documents.reparse("missing")


def test_document_listing_pages_filters_and_counts(repo: Repository) -> None:
    kb, other = _kb(repo), _kb(repo, "other", tenant="acme")
    docs = [_doc(repo, kb, name)[0] for name in ("Report_2024.pdf", "report-draft.md", "notes.txt", "100%.txt")]
    _doc(repo, other, "report.md")
    page = repo.documents.listing(kb.id, limit=2)
    assert (len(page.items), page.total) == (2, 4)
    assert repo.documents.listing(kb.id, limit=2, offset=2).total == 4
    assert {d.id for d in repo.documents.listing(kb.id, limit=2, offset=2).items} | {d.id for d in page.items} == {
        d.id for d in docs}
    found = repo.documents.listing(kb.id, filename_contains="REPORT")
    assert (sorted(d.filename for d in found.items), found.total) == (["Report_2024.pdf", "report-draft.md"], 2)
    assert [d.filename for d in repo.documents.listing(kb.id, filename_contains="t_2").items] == ["Report_2024.pdf"]
    assert [d.filename for d in repo.documents.listing(kb.id, filename_contains="%").items] == ["100%.txt"]
    assert repo.documents.listing(kb.id, filename_contains="t%2").total == 0  # wildcards match only themselves
    assert repo.documents.listing(kb.id, status="done").total == 0
    summaries = {s.kb.name: s for s in repo.kbs.summaries()}
    assert (summaries["docs"].document_count, summaries["docs"].size_bytes) == (4, 40)
    assert (summaries["other"].document_count, summaries["other"].kb.tenant) == (1, "acme")
    assert [s.kb.name for s in repo.kbs.summaries("acme")] == ["other"]
    assert [s.kb.name for s in repo.kbs.summaries("default", name="docs")] == ["docs"]
    empty = _kb(repo, "empty")
    assert [(s.document_count, s.chunk_count) for s in repo.kbs.summaries(name=empty.name)] == [(0, 0)]
    with pytest.raises(NotFound):
        repo.documents.get(docs[0].id, tenant="acme")
    assert repo.documents.get(docs[0].id, tenant="default") == docs[0]


# ---------------------------------------------------------------------------------------------- tasks


def test_task_listing_pages_with_names_totals_and_filters(repo: Repository) -> None:
    kb, other = _kb(repo), _kb(repo, "other", tenant="acme")
    tasks = []
    for i in range(5):
        tasks.append(_doc(repo, kb, f"Chapter_{i}.md")[1])
        time.sleep(0.002)
    acme = _doc(repo, other, "chapter_x.md")[1]
    _doc(repo, _kb(repo, "docs", tenant="acme"), "elsewhere.md")
    page = repo.tasks.listing(tenant="default", limit=2, offset=1)
    assert page.total == 5
    assert [(i.task.id, i.filename, i.kb_name) for i in page.items] == [
        (tasks[3].id, "Chapter_3.md", "docs"), (tasks[2].id, "Chapter_2.md", "docs")]
    everyone = repo.tasks.listing(filename_contains="CHAPTER_")
    assert everyone.total == 6 and everyone.items[0].task.id == acme.id
    assert repo.tasks.listing(filename_contains="r_1").total == 1
    assert repo.tasks.listing(filename_contains="r%1").total == 0
    assert repo.tasks.listing(kb_name="docs").total == 6  # "docs" of both tenants
    assert repo.tasks.listing(kb_id=kb.id, status="queued", limit=1).total == 5
    assert repo.tasks.listing(tenant="acme", kb_name="other").items[0].task.id == acme.id
    assert [i.task.id for i in repo.tasks.listing(document_id=tasks[1].document_id).items] == [tasks[1].id]
    assert repo.tasks.listing(tenant="nobody").total == 0
    with pytest.raises(ValueError):
        repo.tasks.listing(status="bogus")



def test_list_tasks_filters_newest_first(repo: Repository) -> None:
    kb, other = _kb(repo), _kb(repo, "other", tenant="acme")
    first = _doc(repo, kb)[1]
    time.sleep(0.002)
    second = _doc(repo, kb)[1]
    third = _doc(repo, other)[1]
    assert [t.id for t in repo.tasks.query(kb_id=kb.id)] == [second.id, first.id]
    assert [t.id for t in repo.tasks.query(tenant="acme")] == [third.id]
    claim_one(repo, first.id, "w")
    assert [t.id for t in repo.tasks.query(status="running")] == [first.id]
    assert [t.id for t in repo.tasks.query(status=TaskStatus.QUEUED, limit=1)] == [third.id]
    assert len(repo.tasks.query(limit=10, offset=1)) == 2
    with pytest.raises(ValueError):
        repo.tasks.query(status="bogus")


def test_enqueue_bookkeeping(repo: Repository) -> None:
    kb = _kb(repo)
    _, enqueued = _doc(repo, kb)
    _, orphan = _doc(repo, kb)
    repo.tasks.mark_enqueued(enqueued.id, "1-0")
    assert repo.tasks.get(enqueued.id).stream_id == "1-0"
    assert repo.tasks.unenqueued(older_than_s=60) == []
    assert [t.id for t in repo.tasks.unenqueued(older_than_s=-1)] == [orphan.id]
    with pytest.raises(NotFound):
        repo.tasks.mark_enqueued("missing", "2-0")


def test_claim_progress_timings_complete(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    assert not progress_one(repo, task.id, task.version, progress=0.1)  # not running yet
    claimed = claim_one(repo, task.id, "worker-1")
    assert claimed is not None
    assert (claimed.status, claimed.attempts, claimed.worker) == (TaskStatus.RUNNING, 1, "worker-1")
    # Each delivery gets its own fencing token: the claim bumps the version.
    assert claimed.started_at is not None and claimed.version == task.version + 1 == 2
    assert repo.tasks.get(task.id).version == claimed.version
    assert claimed.progress_lines[-1].endswith(" attempt 1 on worker-1")
    assert repo.tasks.get(task.id).progress_msg == claimed.progress_msg
    assert repo.documents.get(doc.id).status == TaskStatus.RUNNING
    v1 = claimed.version

    # The pre-claim version is stale already.
    assert not progress_one(repo, task.id, task.version, message="pre-claim")
    assert progress_one(repo, task.id, v1, progress=0.25, message="parsing\nfile", stage="parse")
    assert progress_one(repo, task.id, v1, progress=7, message="chunked")
    assert progress_one(repo, task.id, v1, stage_timings={"parse": 0.5})
    assert progress_one(repo, task.id, v1, stage_timings={"parse": 0.5, "chunk": 1.25})
    assert not progress_one(repo, task.id, v1 + 1, message="stale")
    assert not progress_one(repo, task.id, v1 + 1, stage_timings={"x": 1})
    now = repo.tasks.get(task.id)
    assert now.progress == 1.0 and now.stage == "parse"
    assert now.stage_timings == {"parse": 0.5, "chunk": 1.25}
    lines = now.progress_lines
    assert lines[-2].endswith(" parsing file") and lines[-1].endswith(" chunked")
    stamp = lines[-1].split(" ", 1)[0]
    assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")

    again = claim_one(repo, task.id, "worker-2")  # redelivery
    assert again is not None and again.attempts == 2 and again.started_at == claimed.started_at
    assert again.stage is None and again.worker == "worker-2"
    assert again.version == v1 + 1

    # worker-1 still holds the version of the earlier claim: it is fenced out of every write.
    assert not progress_one(repo, task.id, v1, progress=0.9, message="straggler", stage="embed")
    assert not progress_one(repo, task.id, v1, stage_timings={"embed": 9.0})
    assert not complete_one(repo, task.id, v1, chunk_count=9, token_count=99, format="pdf")
    assert not repo.ledger.fail(task.id, v1, "straggler failed")
    assert not repo.ledger.requeue(task.id, v1, "straggler requeue")
    after = repo.tasks.get(task.id)
    assert (after.status, after.version, after.worker, after.stage) == (
        TaskStatus.RUNNING,
        again.version,
        "worker-2",
        None,
    )
    # Each delivery logs itself; the straggler's writes left nothing.
    assert again.progress_msg == now.progress_msg + again.progress_lines[-1] + "\n"
    assert again.progress_lines[-1].endswith(" attempt 2 on worker-2")
    assert after.progress_msg == again.progress_msg and after.stage_timings == now.stage_timings
    assert after.error is None and after.finished_at is None
    d = repo.documents.get(doc.id)
    assert (d.status, d.chunk_count, d.format, d.parse_version) == (TaskStatus.RUNNING, 0, None, 0)

    # The current delivery's token works.
    assert progress_one(repo, task.id, again.version, message="resumed")
    assert complete_one(repo, task.id, again.version, chunk_count=5, token_count=50, format="md")
    done = repo.tasks.get(task.id)
    assert done.status == TaskStatus.DONE and done.progress == 1.0 and done.finished_at is not None
    d = repo.documents.get(doc.id)
    assert (d.status, d.chunk_count, d.token_count, d.format, d.parse_version) == (
        TaskStatus.DONE,
        5,
        50,
        "md",
        1,
    )
    assert not complete_one(repo, task.id, again.version, chunk_count=1, token_count=1, format="md")
    assert not complete_one(repo, task.id, v1, chunk_count=1, token_count=1, format="md")
    assert claim_one(repo, task.id, "worker-3") is None
    assert repo.tasks.get(task.id).version == again.version  # a refused claim bumps nothing
    assert claim_one(repo, "missing", "worker-3") is None


def test_fail_and_requeue(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    first = claim_one(repo, task.id, "w")
    assert first is not None
    assert not repo.ledger.requeue(task.id, 9, "stale")
    assert not repo.ledger.requeue(task.id, task.version, "pre-claim version")
    assert repo.ledger.requeue(task.id, first.version, "redis down")
    queued = repo.tasks.get(task.id)
    assert queued.status == TaskStatus.QUEUED and queued.error == "redis down"
    assert queued.version == first.version  # requeue keeps the token; the next claim replaces it
    assert queued.progress_lines[-1].endswith("attempt 1 failed: redis down; will retry")
    assert repo.documents.get(doc.id).status == TaskStatus.QUEUED
    assert not repo.ledger.requeue(task.id, first.version, "not running")
    second = claim_one(repo, task.id, "w")
    assert second is not None and second.version == first.version + 1 and second.attempts == 2
    # The first delivery's token no longer works after the redelivery.
    assert not repo.ledger.fail(task.id, first.version, "stale delivery")
    assert not repo.ledger.requeue(task.id, first.version, "stale delivery")
    assert repo.tasks.get(task.id).status == TaskStatus.RUNNING
    assert repo.ledger.fail(task.id, second.version, "corrupt pdf")
    failed = repo.tasks.get(task.id)
    assert failed.status == TaskStatus.FAILED and failed.error == "corrupt pdf" and failed.attempts == 2
    assert repo.documents.get(doc.id).status == TaskStatus.FAILED
    assert not repo.ledger.fail(task.id, second.version, "again")


def test_cancel_fences_out_the_worker(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    claimed = claim_one(repo, task.id, "w")
    assert claimed is not None
    cancelled = repo.tasks.cancel(task.id)
    assert cancelled.status == TaskStatus.CANCELLED and cancelled.version == claimed.version + 1
    assert cancelled.finished_at is not None
    assert repo.documents.get(doc.id).status == TaskStatus.CANCELLED
    # The worker still holds the old version: every write is refused.
    assert not complete_one(repo, task.id, claimed.version, chunk_count=1, token_count=1, format="txt")
    assert not progress_one(repo, task.id, claimed.version, progress=0.5)
    assert not repo.ledger.fail(task.id, claimed.version, "x")
    assert claim_one(repo, task.id, "w") is None
    with pytest.raises(Conflict, match="already cancelled"):
        repo.tasks.cancel(task.id)
    with pytest.raises(NotFound):
        repo.tasks.cancel("missing")


def test_cancel_done_task_is_conflict(repo: Repository) -> None:
    kb = _kb(repo)
    _, task = _doc(repo, kb)
    claimed = claim_one(repo, task.id, "w")
    assert claimed is not None
    assert complete_one(repo, task.id, claimed.version, chunk_count=1, token_count=1, format="txt")
    with pytest.raises(Conflict, match="already done"):
        repo.tasks.cancel(task.id)


def test_retry_gives_a_new_version(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    with pytest.raises(Conflict):
        repo.tasks.retry(task.id)  # queued
    claimed = claim_one(repo, task.id, "w")
    assert claimed is not None
    with pytest.raises(Conflict):
        repo.tasks.retry(task.id)  # running
    repo.tasks.mark_enqueued(task.id, "5-0")
    assert repo.ledger.fail(task.id, claimed.version, "boom")
    before = repo.documents.get(doc.id)
    assert (before.parse_version, before.next_parse_version) == (0, task.parse_version)
    retried = repo.tasks.retry(task.id)
    assert (retried.status, retried.version, retried.attempts) == (TaskStatus.QUEUED, claimed.version + 1, 0)
    assert retried.error is None and retried.stream_id is None and retried.progress == 0.0
    assert retried.worker is None and retried.stage is None
    assert retried.finished_at is None and retried.progress_lines[-1].endswith(" retry requested")
    # A new parse version, allocated from the document's counter; the live chunk set is untouched.
    doc_now = repo.documents.get(doc.id)
    assert retried.parse_version > task.parse_version
    assert retried.parse_version == doc_now.next_parse_version == before.next_parse_version + 1
    assert doc_now.status == TaskStatus.QUEUED and doc_now.parse_version == before.parse_version
    assert repo.tasks.get(task.id) == retried
    # The old versions cannot touch the retried task; the new delivery's can.
    reclaimed = claim_one(repo, task.id, "w2")
    assert reclaimed is not None and reclaimed.version == retried.version + 1
    assert reclaimed.parse_version == retried.parse_version
    assert not progress_one(repo, task.id, claimed.version, progress=0.5)
    assert not complete_one(repo, task.id, claimed.version, chunk_count=1, token_count=1, format="txt")
    assert not complete_one(repo, task.id, retried.version, chunk_count=1, token_count=1, format="txt")
    assert complete_one(repo, task.id, reclaimed.version, chunk_count=1, token_count=1, format="txt")
    assert repo.documents.get(doc.id).parse_version == retried.parse_version
    # Cancelled tasks can be retried too, and a straggler of the cancelled run stays fenced out.
    second = repo.documents.reparse(doc.id)
    assert second.parse_version == retried.parse_version + 1  # the counter never hands a version out twice
    running = claim_one(repo, second.id, "w3")
    assert running is not None
    cancelled = repo.tasks.cancel(second.id)
    again = repo.tasks.retry(second.id)
    assert again.version == cancelled.version + 1 == running.version + 2
    assert again.parse_version > second.parse_version
    doc_now = repo.documents.get(doc.id)
    assert again.parse_version == doc_now.next_parse_version == second.parse_version + 1
    assert doc_now.parse_version == retried.parse_version  # still the last completed parse
    assert not complete_one(repo, second.id, running.version, chunk_count=7, token_count=7, format="md")
    assert not progress_one(repo, second.id, running.version, progress=0.5)
    assert repo.documents.get(doc.id).parse_version == retried.parse_version
    with pytest.raises(NotFound):
        repo.tasks.retry("missing")


def test_retry_of_an_outdated_parse_is_conflict(repo: Repository) -> None:
    kb = _kb(repo)
    doc, first = _doc(repo, kb)
    repo.tasks.cancel(first.id)
    repo.documents.reparse(doc.id)
    with pytest.raises(Conflict, match="latest parse"):
        repo.tasks.retry(first.id)


def test_task_counts(repo: Repository) -> None:
    kb, other = _kb(repo), _kb(repo, "o", tenant="acme")
    tasks = [_doc(repo, kb)[1] for _ in range(3)]
    _doc(repo, other)
    claim_one(repo, tasks[0].id, "w")
    repo.tasks.cancel(tasks[1].id)
    counts = repo.tasks.counts()
    assert counts == {"queued": 2, "running": 1, "done": 0, "failed": 0, "cancelled": 1}
    assert repo.tasks.counts(tenant="acme")["queued"] == 1
    assert repo.tasks.counts(tenant="nobody") == dict.fromkeys(counts, 0)


def test_concurrent_claim_and_complete_exactly_one_wins(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            barrier.wait(timeout=10)
            claimed = claim_one(repo, task.id, name)
            results[name] = claimed is not None and complete_one(repo,
                task.id, claimed.version, chunk_count=len(name), token_count=1, format=name
            ) is not None
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "bb")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(results.values()) == [False, True]
    winner = next(n for n, ok in results.items() if ok)
    d = repo.documents.get(doc.id)
    assert d.format == winner and d.chunk_count == len(winner)
    assert repo.tasks.get(task.id).status == TaskStatus.DONE


def test_concurrent_cancel_and_complete(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    claimed = claim_one(repo, task.id, "w")
    assert claimed is not None
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def complete() -> None:
        barrier.wait(timeout=10)
        outcome["complete"] = complete_one(repo, task.id, claimed.version, chunk_count=1, token_count=1, format="txt")

    def cancel() -> None:
        barrier.wait(timeout=10)
        try:
            outcome["cancel"] = repo.tasks.cancel(task.id).status
        except Conflict:
            outcome["cancel"] = "conflict"

    threads = [threading.Thread(target=complete), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    final = repo.tasks.get(task.id).status
    if outcome["complete"]:
        assert outcome["cancel"] == "conflict" and final == TaskStatus.DONE
    else:
        assert outcome["cancel"] == TaskStatus.CANCELLED and final == TaskStatus.CANCELLED
    assert repo.documents.get(doc.id).status == final


# ------------------------------------------------------------------------------- batched worker writes


def test_claim_tasks_claims_a_batch_with_documents_and_kbs(repo: Repository) -> None:
    kb = _kb(repo)
    docs = [_doc(repo, kb, filename=f"d{i}.txt") for i in range(3)]
    (_, done_task), (_, cancelled_task) = docs[1], docs[2]
    running = claim_one(repo, done_task.id, "w0")
    assert complete_one(repo, done_task.id, running.version, chunk_count=1, token_count=1, format="txt")
    repo.tasks.cancel(cancelled_task.id)

    first = docs[0][1]
    claimed = repo.ledger.claim([first.id, done_task.id, "missing", first.id, cancelled_task.id], "w1")
    assert [c is None for c in claimed] == [False, True, True, False, True]
    one, twice = claimed[0], claimed[3]
    assert one is not None and twice is not None
    assert one.document.id == docs[0][0].id and one.document.status == TaskStatus.RUNNING
    assert one.kb == repo.kbs.get_by_id(kb.id)
    # Named twice = delivered twice: two claims, and the later one fences out the earlier.
    assert (one.task.attempts, twice.task.attempts) == (1, 2) and twice.task.version == one.task.version + 1
    assert not progress_one(repo, first.id, one.task.version, progress=0.5)
    assert progress_one(repo, first.id, twice.task.version, progress=0.5)
    stored = repo.tasks.get(first.id)
    assert [line.split(" ", 1)[1] for line in stored.progress_lines] == ["queued", "attempt 1 on w1", "attempt 2 on w1"]
    assert stored.progress_msg == twice.task.progress_msg and stored.progress == 0.5
    assert repo.documents.get(docs[0][0].id).status == TaskStatus.RUNNING


def test_write_tasks_applies_a_round_in_order_with_fencing(repo: Repository) -> None:
    from common.db import CompleteWrite, ProgressWrite

    kb = _kb(repo)
    (doc_a, a), (doc_b, b) = _doc(repo, kb, filename="a.txt"), _doc(repo, kb, filename="b.txt")
    ca, cb = (c.task for c in repo.ledger.claim([a.id, b.id], "w") if c is not None)
    results = repo.ledger.write([
        ProgressWrite(a.id, ca.version, progress=0.5, message="half", stage="embed"),
        ProgressWrite(b.id, cb.version - 1, message="stale"),
        CompleteWrite(a.id, ca.version, chunk_count=3, token_count=30, format="txt", stage_timings={"embed": 1.5}),
        ProgressWrite(a.id, ca.version, message="after done"),  # the task is no longer running
        CompleteWrite(b.id, cb.version - 1, chunk_count=1, token_count=1, format="txt"),
    ])
    assert results[0] is True and results[1] is False and results[3] is False and results[4] is None
    assert results[2] is not None and not isinstance(results[2], bool) and results[2].document_done
    done = repo.tasks.get(a.id)
    assert (done.status, done.chunk_count, done.stage_timings) == (TaskStatus.DONE, 3, {"embed": 1.5})
    assert [line.split(" ", 1)[1] for line in done.progress_lines[-2:]] == ["half", "done"]
    live = repo.documents.get(doc_a.id)
    assert (live.status, live.parse_version, live.chunk_count, live.format) == (TaskStatus.DONE, 1, 3, "txt")
    assert "stale" not in repo.tasks.get(b.id).progress_msg
    assert repo.documents.get(doc_b.id).status == TaskStatus.RUNNING


def test_write_tasks_merges_one_deliverys_consecutive_writes_keeping_every_line(repo: Repository) -> None:
    from common.db import CompleteWrite, ProgressWrite

    kb = _kb(repo)
    _, task = _doc(repo, kb)
    claimed = claim_one(repo, task.id, "w")
    results = repo.ledger.write([
        ProgressWrite(task.id, claimed.version, progress=0.1, message="fetch started", stage="fetch"),
        ProgressWrite(task.id, claimed.version, progress=0.2, message="parse started", stage="parse",
                      stage_timings={"fetch": 0.5}),
        CompleteWrite(task.id, claimed.version, chunk_count=2, token_count=20, format="txt"),
    ])
    assert results[:2] == [True, True] and results[2] is not None and not isinstance(results[2], bool)
    done = repo.tasks.get(task.id)
    assert [line.split(" ", 1)[1] for line in done.progress_lines[-3:]] == ["fetch started", "parse started", "done"]
    assert done.stage_timings == {"fetch": 0.5} and done.status == TaskStatus.DONE

    # A write of an older delivery in the same round does not merge into the current one's.
    again = repo.documents.reparse(task.document_id)
    current = claim_one(repo, again.id, "w2")
    results = repo.ledger.write([
        ProgressWrite(again.id, current.version - 1, message="straggler"),
        ProgressWrite(again.id, current.version, message="current"),
    ])
    assert results == [False, True]
    lines = repo.tasks.get(again.id).progress_lines
    assert lines[-1].endswith(" current") and not any(line.endswith(" straggler") for line in lines)


def test_last_two_parts_completing_in_one_round_make_the_document_live_once(repo: Repository) -> None:
    from common.db import CompleteWrite

    kb = _kb(repo)
    doc, task = _doc(repo, kb, filename="big.pdf")
    running = claim_one(repo, task.id, "w1")
    (part,) = repo.ledger.split(task.id, running.version, [(1, 10), (11, 20)])
    second = claim_one(repo, part.id, "w1")
    results = repo.ledger.write([
        CompleteWrite(task.id, running.version, chunk_count=4, token_count=40, format="pdf"),
        CompleteWrite(part.id, second.version, chunk_count=5, token_count=50, format="pdf"),
    ])
    assert [r.document_done for r in results if r is not None and not isinstance(r, bool)] == [True, False]
    live = repo.documents.get(doc.id)
    assert (live.status, live.parse_version, live.chunk_count, live.token_count) == ("done", 1, 9, 90)


# ------------------------------------------------------------------------------- page-range parts


def test_split_parts_complete_the_document_only_together(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb, filename="big.pdf")
    running = claim_one(repo, task.id, "w1")
    parts = repo.ledger.split(task.id, running.version, [(1, 10), (11, 20), (21, 25)])
    assert [(p.part, p.parts, p.page_from, p.page_to) for p in parts] == [(1, 3, 11, 20), (2, 3, 21, 25)]
    assert all(p.status == "queued" and p.parse_version == task.parse_version for p in parts)
    first = repo.tasks.get(task.id)
    assert (first.part, first.parts, first.page_from, first.page_to) == (0, 3, 1, 10)
    with pytest.raises(Conflict):  # a redelivery must not split twice
        repo.ledger.split(task.id, running.version, [(1, 5), (6, 25)])

    done = complete_one(repo, task.id, running.version, chunk_count=4, token_count=40, format="pdf")
    assert done is not None and not done.document_done
    assert repo.documents.get(doc.id).parse_version == 0  # not live until every part is done
    second = claim_one(repo, parts[0].id, "w2")
    middle = complete_one(repo, parts[0].id, second.version, chunk_count=5, token_count=50, format="pdf")
    assert middle is not None and not middle.document_done
    third = claim_one(repo, parts[1].id, "w1")
    last = complete_one(repo, parts[1].id, third.version, chunk_count=2, token_count=20, format="pdf")
    assert last is not None and last.document_done
    live = repo.documents.get(doc.id)
    assert (live.status, live.parse_version, live.chunk_count, live.token_count) == ("done", 1, 11, 110)


def test_cancel_parts_and_retry_of_a_part_reruns_the_whole_document(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb, filename="big.pdf")
    running = claim_one(repo, task.id, "w1")
    parts = repo.ledger.split(task.id, running.version, [(1, 10), (11, 20), (21, 30)])
    claim_one(repo, parts[0].id, "w2")
    assert repo.ledger.fail(parts[1].id, repo.tasks.get(parts[1].id).version, "damaged page")
    cancelled = repo.ledger.cancel_parts(doc.id, task.parse_version, "part 3 failed", TaskStatus.FAILED)
    assert set(cancelled) == {task.id, parts[0].id}
    assert {repo.tasks.get(t).status for t in cancelled} == {"cancelled"}
    assert not complete_one(repo, task.id, running.version, chunk_count=1, token_count=1, format="pdf")
    assert repo.ledger.cancel_parts(doc.id, task.parse_version, "again", TaskStatus.FAILED) == []

    retried = repo.tasks.retry(parts[1].id)
    assert (retried.part, retried.parts, retried.page_from, retried.page_to) == (0, 1, None, None)
    assert retried.parse_version > task.parse_version and retried.status == "queued"
    assert repo.documents.get(doc.id).status == "queued"


def test_a_part_started_while_its_sibling_is_cancelled_leaves_the_document_cancelled(repo: Repository) -> None:
    """Cancelling a part is two steps (the part, then its siblings): a sibling a worker starts in
    between writes `running` on the document; cancelling the siblings puts `cancelled` back."""
    kb = _kb(repo)
    doc, task = _doc(repo, kb, filename="big.pdf")
    running = claim_one(repo, task.id, "w1")
    parts = repo.ledger.split(task.id, running.version, [(1, 10), (11, 20), (21, 30)])
    repo.tasks.cancel(parts[1].id)
    assert repo.documents.get(doc.id).status == "cancelled"
    claim_one(repo, parts[0].id, "w2")  # starts in between
    assert repo.documents.get(doc.id).status == "running"
    siblings = repo.ledger.cancel_parts(doc.id, task.parse_version, "part 3 was cancelled", TaskStatus.CANCELLED)
    assert parts[0].id in siblings
    assert repo.documents.get(doc.id).status == "cancelled"


def test_old_task_tables_gain_the_part_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = open_database(url)
    with db:  # a task table as docvec created it before page-range parts existed
        db.execute_sql("CREATE TABLE task (id VARCHAR(32) PRIMARY KEY, document_id VARCHAR(32), kb_id VARCHAR(32), "
                       "tenant VARCHAR(64), status VARCHAR(16), priority VARCHAR(16), parse_version INTEGER, "
                       "version INTEGER, progress REAL, progress_msg TEXT, stage VARCHAR(64), stage_timings TEXT, "
                       "attempts INTEGER, error TEXT, worker VARCHAR(255), stream_id VARCHAR(64), created_at REAL, "
                       "started_at REAL, finished_at REAL, updated_at REAL)")
    db.close_all()
    repo = Repository(open_database(url))
    try:
        kb = _kb(repo)
        _, task = _doc(repo, kb)
        assert (task.part, task.parts, task.page_from, task.chunk_count) == (0, 1, None, 0)
    finally:
        repo.close()


# ---------------------------------------------------------------------------------------------- garbage


def _garbage(repo: Repository) -> list[tuple[str, str | None, int | None, str | None]]:
    """(kind, document, parse version, blob) of every garbage row, sorted."""
    rows = repo.garbage.due(1000, any_time=True)
    return sorted((g.kind.value, g.document_id, g.parse_version, g.blob_key) for g in rows)


def _run(repo: Repository, task_id: str) -> int:
    claimed = claim_one(repo, task_id, "w")
    assert claimed is not None
    return claimed.version


def test_a_completed_reparse_makes_the_replaced_version_garbage_in_the_same_transaction(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    first = complete_one(repo, task.id, _run(repo, task.id), chunk_count=3, token_count=30, format="txt")
    assert first is not None and first.replaced_version == 0
    assert _garbage(repo) == []
    second = repo.documents.reparse(doc.id)
    done = complete_one(repo, second.id, _run(repo, second.id), chunk_count=3, token_count=30, format="txt")
    assert done is not None and done.document_done and done.replaced_version == 1
    assert _garbage(repo) == [("chunks", doc.id, 1, None)]
    (row,) = repo.garbage.due(10, any_time=True)
    assert row.collection == kb.collection and "replaced by parse version 2" in row.reason
    assert repo.documents.live_versions([doc.id, "missing"]) == {doc.id: 2}


def test_failed_and_cancelled_parses_are_garbage_once(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    assert repo.ledger.fail(task.id, _run(repo, task.id), "corrupt")
    assert _garbage(repo) == [("chunks", doc.id, 1, None)]
    retried = repo.tasks.retry(task.id)
    assert retried.parse_version == 2
    repo.tasks.cancel(retried.id)
    assert _garbage(repo) == [("chunks", doc.id, 1, None), ("chunks", doc.id, 2, None)]
    assert repo.documents.live_versions([doc.id]) == {}  # nothing of it is searchable


def test_cancelled_parts_of_a_split_parse_are_one_garbage_row(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    repo.ledger.split(task.id, _run(repo, task.id), [(1, 10), (11, 20), (21, 30)])
    assert repo.ledger.fail(task.id, repo.tasks.get(task.id).version, "part 1 broke")
    assert len(repo.ledger.cancel_parts(doc.id, 1, "part 1 failed", TaskStatus.FAILED)) == 2
    assert _garbage(repo) == [("chunks", doc.id, 1, None)]


def test_deleting_a_document_cancels_its_tasks_and_records_its_chunks_and_blob(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    claimed_version = _run(repo, task.id)
    assert repo.documents.delete(doc.id) == [task.id]
    assert _garbage(repo) == [("blob", None, None, doc.blob_key), ("chunks", doc.id, None, None)]
    assert not complete_one(repo, task.id, claimed_version, chunk_count=1, token_count=1, format="txt")
    with pytest.raises(NotFound):
        repo.documents.delete(doc.id)


def test_deleting_a_kb_cancels_its_tasks_and_records_its_collection_and_every_blob(repo: Repository) -> None:
    kb = _kb(repo)
    created = [_doc(repo, kb, f"{i}.txt") for i in range(3)]
    docs = [doc for doc, _ in created]
    _run(repo, created[0][1].id)  # one running, two queued: all three are cancelled
    assert sorted(repo.kbs.delete(kb.id)) == sorted(task.id for _, task in created)
    rows = repo.garbage.due(100, any_time=True)
    assert [r.collection for r in rows if r.kind.value == "collection"] == [kb.collection]
    assert sorted(r.blob_key for r in rows if r.kind.value == "blob") == sorted(d.blob_key for d in docs)
    with pytest.raises(NotFound):
        repo.kbs.get_by_id(kb.id)


def test_an_upload_is_garbage_until_its_rows_are_written(repo: Repository) -> None:
    kb = _kb(repo)
    repo.garbage.intend_blob(kb.id, "kb/x/committed", commit_within_s=60)
    repo.garbage.intend_blob(kb.id, "kb/x/orphan", commit_within_s=60)
    assert repo.garbage.due(10) == []  # not before its commit window ends
    repo.documents.submit(kb, source_id="a.txt", filename="a.txt", size_bytes=1, sha256="0" * 64,
                          blob_key="kb/x/committed")
    assert [g.blob_key for g in repo.garbage.due(10, now=time.time() + 61)] == ["kb/x/orphan"]


def test_garbage_passes_are_recorded_and_confirmed_rows_dropped(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    repo.tasks.cancel(task.id)
    (row,) = repo.garbage.due(10)
    assert repo.garbage.stats()[0] == 1
    repo.garbage.tried(row.id, removed=4, error=None, retry_at=time.time() + 60)
    assert repo.garbage.due(10) == []
    (again,) = repo.garbage.due(10, now=time.time() + 61)
    assert (again.attempts, again.removed) == (1, 4)
    assert repo.garbage.due(10, document_id="other", any_time=True) == []
    repo.garbage.drop(row.id)
    assert repo.garbage.stats() == (0, None)


def test_a_delivery_lost_with_redis_is_not_counted(repo: Repository) -> None:
    kb = _kb(repo)
    _, task = _doc(repo, kb)
    claimed = claim_one(repo, task.id, "w")
    assert claimed is not None and claimed.attempts == 1
    assert not repo.ledger.refund_lost_delivery(task.id, claimed.version - 1), "a stale view refunds nothing"
    assert repo.ledger.refund_lost_delivery(task.id, claimed.version)
    refunded = repo.tasks.get(task.id)
    assert refunded.attempts == 0 and "not counted" in refunded.progress_lines[-1]
    again = claim_one(repo, task.id, "w2")
    assert again is not None and again.attempts == 1


def test_a_delivery_returned_by_a_stopping_worker_is_queued_and_not_counted(repo: Repository) -> None:
    kb = _kb(repo)
    doc, task = _doc(repo, kb)
    first = claim_one(repo, task.id, "w1")
    assert first is not None and first.attempts == 1
    second = claim_one(repo, task.id, "w2")  # w1's entry was reclaimed meanwhile
    assert second is not None and second.attempts == 2
    assert not repo.ledger.return_interrupted(task.id, first.version), "a straggler cannot undo a newer claim"
    assert repo.tasks.get(task.id).status == "running"
    assert repo.ledger.return_interrupted(task.id, second.version)
    returned = repo.tasks.get(task.id)
    assert (returned.status, returned.attempts, returned.stage) == ("queued", 1, None)
    assert "returned to the queue (this attempt is not counted)" in returned.progress_lines[-1]
    assert repo.documents.get(doc.id).status == "queued"
    assert not repo.ledger.return_interrupted(task.id, second.version), "once only"
    again = claim_one(repo, task.id, "w3")
    assert again is not None and again.attempts == 2


def test_every_record_field_is_a_column_of_its_table_and_back(sqlite_url: str) -> None:
    """A field is declared twice — in its model and in its record — and nowhere else: the two agree."""
    from common.db.models import build_models
    from common.db.records import DocumentRecord, GarbageRecord, KbRecord, TaskRecord, columns

    models = build_models(open_database(sqlite_url))
    for model, record in ((models.kb, KbRecord), (models.document, DocumentRecord), (models.task, TaskRecord),
                          (models.garbage, GarbageRecord)):
        assert sorted(f.column_name for f in model._meta.sorted_fields) == sorted(columns(record)), record


# ------------------------------------------------------------------------------------------ source keys


def _submit(repo: Repository, kb, source_id: str, sha256: str, blob: str | None = None):
    return repo.documents.submit(kb, source_id=source_id, filename=source_id.rsplit("/", 1)[-1], size_bytes=10,
                                 sha256=sha256, blob_key=blob or f"kb/{kb.id}/{uuid.uuid4().hex}")


def test_a_source_key_is_added_then_unchanged_then_updated_in_place(repo: Repository) -> None:
    kb = _kb(repo)
    added = _submit(repo, kb, "guide/intro.md", "a" * 64, "kb/x/first")
    assert added.outcome == "added" and added.task is not None and added.task.parse_version == 1
    same = _submit(repo, kb, "guide/intro.md", "a" * 64, "kb/x/again")
    assert same.outcome == "unchanged" and same.task is None and same.document.id == added.document.id
    assert ("blob", None, None, "kb/x/again") in _garbage(repo), "an unchanged upload's blob is not kept"
    version = _run(repo, added.task.id)
    complete_one(repo, added.task.id, version, chunk_count=3, token_count=30, format="md")
    updated = _submit(repo, kb, "guide/intro.md", "b" * 64, "kb/x/second")
    assert updated.outcome == "updated" and updated.document.id == added.document.id
    assert updated.task is not None and updated.task.parse_version == 2
    document = repo.documents.get(added.document.id)
    assert (document.sha256, document.blob_key, document.parse_version) == ("b" * 64, "kb/x/second", 1)
    assert ("blob", None, None, "kb/x/first") in _garbage(repo), "the replaced upload's blob is garbage"
    assert [d.id for d in repo.documents.of_kb(kb.id)] == [added.document.id]
    other_kb = _kb(repo, "other")
    assert _submit(repo, other_kb, "guide/intro.md", "b" * 64).outcome == "added", "keys are per knowledge base"


def test_a_newer_upload_supersedes_the_unfinished_one(repo: Repository) -> None:
    kb = _kb(repo)
    first = _submit(repo, kb, "a.md", "a" * 64)
    assert first.task is not None
    version = _run(repo, first.task.id)  # a worker is on it
    later = _submit(repo, kb, "a.md", "b" * 64)
    assert later.outcome == "updated" and later.superseded == [first.task.id]
    superseded = repo.tasks.get(first.task.id)
    assert superseded.status == "cancelled" and "superseded" in (superseded.error or "")
    assert complete_one(repo, first.task.id, version, chunk_count=1, token_count=1, format="md") is None, \
        "the superseded worker is fenced out"
    assert ("chunks", first.document.id, 1, None) in _garbage(repo)
    assert repo.documents.get(first.document.id).status == "queued"


def test_failed_content_submitted_again_is_parsed_again(repo: Repository) -> None:
    kb = _kb(repo)
    first = _submit(repo, kb, "a.md", "a" * 64)
    assert first.task is not None
    version = _run(repo, first.task.id)
    assert repo.ledger.fail(first.task.id, version, "broken")
    again = _submit(repo, kb, "a.md", "a" * 64)
    assert again.outcome == "updated" and again.task is not None


def test_concurrent_submissions_of_one_new_key_make_one_document(repo: Repository) -> None:
    kb = _kb(repo)
    results: list[object] = []
    barrier = threading.Barrier(4)

    def submit(i: int) -> None:
        barrier.wait()
        results.append(_submit(repo, kb, "same.md", f"{i}" * 64))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    (document,) = repo.documents.of_kb(kb.id)
    tasks = repo.tasks.of_document(document.id)
    assert sum(t.status == "queued" for t in tasks) == 1, "one live upload: the last one"
    assert max(tasks, key=lambda t: t.parse_version).status == "queued"


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_a_submission_whose_snapshot_predates_another_still_supersedes_it(
        server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """B's transaction reads (its snapshot under MySQL's REPEATABLE READ) before C submits the same key
    and commits; B then takes the document row's lock and must cancel C's task, which its snapshot does
    not hold: one live upload, the last one. (SQLite serialises the two whole transactions instead.)"""
    repository = Repository(open_database(request.getfixturevalue(f"{server}_url")))
    try:
        kb = _kb(repository)
        _submit(repository, kb, "same.md", "a" * 64)
        kb_model = repository.documents.m.kb
        original = kb_model.get_or_none
        has_snapshot, c_committed = threading.Event(), threading.Event()

        def paused(*args: object, **kwargs: object) -> object:
            found = original(*args, **kwargs)
            if threading.current_thread().name == "B":
                has_snapshot.set()
                assert c_committed.wait(10)
            return found

        monkeypatch.setattr(kb_model, "get_or_none", paused)
        b_result: list[object] = []
        b = threading.Thread(target=lambda: b_result.append(_submit(repository, kb, "same.md", "b" * 64)), name="B")
        b.start()
        assert has_snapshot.wait(10)
        _submit(repository, kb, "same.md", "c" * 64)  # C: supersedes the first upload and commits
        c_committed.set()
        b.join(10)
        assert b_result, "B's submission finished"
        (document,) = repository.documents.of_kb(kb.id)
        tasks = repository.tasks.of_document(document.id)
        assert sum(t.status == "queued" for t in tasks) == 1, "one live upload: the last one"
        assert max(tasks, key=lambda t: t.parse_version).status == "queued"
    finally:
        repository.close()


def test_sources_lists_keyed_documents_for_sync(repo: Repository) -> None:
    kb = _kb(repo)
    a = _submit(repo, kb, "a.md", "a" * 64)
    _submit(repo, kb, "dir/b.md", "b" * 64)
    sources = repo.documents.sources(kb.id)
    assert set(sources) == {"a.md", "dir/b.md"}
    assert sources["a.md"].document_id == a.document.id
    assert sources["a.md"].unchanged_by("a" * 64) and not sources["a.md"].unchanged_by("c" * 64)


def test_documents_from_before_source_keys_get_their_unique_file_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    repo = Repository(open_database(url))
    kb = _kb(repo)
    docs = {name: _doc(repo, kb, name)[0] for name in ("a.md", "twice.md", "twice.md")}
    repo.close()
    db = open_database(url)
    with db:  # as an older docvec left the table: no source keys, no counts of reused chunks
        db.execute_sql("DROP INDEX document_kb_id_source_id")
        for column in ("source_id", "chunks_embedded", "chunks_reused"):
            db.execute_sql(f"ALTER TABLE document DROP COLUMN {column}")
    db.close_all()
    repo = Repository(open_database(url))
    try:
        keys = {d.filename: d.source_id for d in repo.documents.of_kb(kb.id) if d.filename != "twice.md"}
        assert keys == {"a.md": "a.md"}
        assert all(d.source_id is None for d in repo.documents.of_kb(kb.id) if d.filename == "twice.md")
        assert _submit(repo, kb, "a.md", "0" * 64).outcome == "unchanged"
        assert docs["a.md"].id == repo.documents.sources(kb.id)["a.md"].document_id
    finally:
        repo.close()


def test_stored_vectors_round_trip_and_are_written_once(repo: Repository) -> None:
    import numpy as np

    first = {"k1": np.arange(4, dtype=np.float32), "k2": np.ones(4, dtype=np.float32)}
    repo.embeddings.put_many(first)
    repo.embeddings.put_many({"k1": np.zeros(4, dtype=np.float32)})  # another worker, same key: kept as it was
    found = repo.embeddings.get_many(["k1", "k2", "k3", "k1"], dim=4)
    assert set(found) == {"k1", "k2"} and np.array_equal(found["k1"], first["k1"])
    assert repo.embeddings.get_many(["k1"], dim=8) == {}
    assert repo.embeddings.count() == 2
