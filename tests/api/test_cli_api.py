"""The CLI's API paths (`--api`) against a real uvicorn: they send the key from --key, DOCVEC_API_KEY or
`<data_dir>/admin.key`, and a missing key is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from docvec_cli.main import app
from tests.api.live import LiveApi
from tests.docvec.folders import LATIN1_NAME_SHOWN, odd_folder

TEXT = "# Kites\n\nA kite flies because the wind pushes against its tilted face.\n"


def _runner(data_dir: Path, key: str | None = None) -> CliRunner:
    return CliRunner(env={"DOCVEC_DATA_DIR": str(data_dir), "DOCVEC_API_KEY": key, "DOCVEC_API_URL": None})


def test_ingest_search_and_tasks_through_the_api(live_api: LiveApi, tmp_path: Path) -> None:
    key = live_api.issue_key("kites").secret
    doc = tmp_path / "kites.md"
    doc.write_text(TEXT)
    live_api.start_worker()
    runner = _runner(tmp_path / "empty", key)
    ingested = runner.invoke(app, ["ingest", str(doc), "--kb", "air", "--wait", "--api", live_api.url])
    assert ingested.exit_code == 0, ingested.output
    assert "1/1 documents done" in ingested.output
    assert "1 added, 0 updated, 0 unchanged, 0 deleted; 1 chunks embedded, 0 reused" in ingested.output
    again = runner.invoke(app, ["ingest", str(doc), "--kb", "air", "--wait", "--api", live_api.url])
    assert again.exit_code == 0, again.output
    assert "0 added, 0 updated, 1 unchanged, 0 deleted" in again.output, "a re-run of unchanged files is a no-op"
    found = runner.invoke(app, ["search", "wind on a kite", "--kb", "air", "--json", "--api", live_api.url])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.output)
    assert hits and hits[0]["filename"] == "kites.md"

    other = _runner(tmp_path / "empty", live_api.issue_key("someone-else").secret)
    hidden = other.invoke(app, ["search", "wind", "--kb", "air", "--api", live_api.url])
    assert hidden.exit_code == 2 and "not found" in hidden.output


def test_the_admin_key_file_is_the_fallback(live_api: LiveApi, tmp_path: Path) -> None:
    data_dir = tmp_path / "cli-data"
    data_dir.mkdir()
    (data_dir / "admin.key").write_text(live_api.issue_key("default", admin=True).secret + "\n")
    status = _runner(data_dir).invoke(app, ["status", "--json", "--api", live_api.url])
    assert status.exit_code == 0, status.output
    assert set(json.loads(status.output)) >= {"workers", "streams", "tasks"}
    explicit = _runner(tmp_path / "empty").invoke(app, ["tasks", "cancel", "nope", "--api", live_api.url,
                                                        "--key", live_api.issue_key("t").secret])
    assert explicit.exit_code == 2 and "not found" in explicit.output


def test_no_key_is_a_clear_error(live_api: LiveApi, tmp_path: Path) -> None:
    result = _runner(tmp_path / "empty").invoke(app, ["tasks", "retry", "x", "--api", live_api.url])
    assert result.exit_code == 2
    assert "401" in result.output and "DOCVEC_API_KEY" in result.output


def test_tasks_list_through_the_api(live_api: LiveApi, tmp_path: Path) -> None:
    key = live_api.issue_key("lister").secret
    doc = tmp_path / "kites.md"
    doc.write_text(TEXT)
    runner = _runner(tmp_path / "empty", key)
    assert runner.invoke(app, ["ingest", str(doc), "--kb", "air", "--api", live_api.url]).exit_code == 0
    listed = runner.invoke(app, ["tasks", "list", "--status", "queued", "--kb", "air", "--json", "--api", live_api.url])
    assert listed.exit_code == 0, listed.output
    tasks = json.loads(listed.output)
    assert len(tasks) == 1 and tasks[0]["status"] == "queued"
    assert runner.invoke(app, ["tasks", "cancel", tasks[0]["id"], "--api", live_api.url]).exit_code == 0
    none_queued = runner.invoke(app, ["tasks", "list", "--status", "queued", "--api", live_api.url])
    assert none_queued.exit_code == 0 and "no tasks" in none_queued.output


def test_search_prints_document_text_literally(live_api: LiveApi, tmp_path: Path) -> None:
    """Text that looks like rich markup (`array[/i]`, `[bold]`) is document text: printed as it is,
    never parsed (it used to crash `docvec search` with a MarkupError)."""
    key = live_api.issue_key("markup").secret
    doc = tmp_path / "markup[1].md"
    doc.write_text("# Index [/i] notes\n\nIndexing uses array[/i] and [bold]weights[/bold] with [red] ink.\n")
    live_api.start_worker()
    runner = _runner(tmp_path / "empty", key)
    ingested = runner.invoke(app, ["ingest", str(doc), "--kb", "m", "--wait", "--api", live_api.url])
    assert ingested.exit_code == 0, ingested.output
    found = runner.invoke(app, ["search", "array indexing", "--kb", "m", "--api", live_api.url],
                          env={"COLUMNS": "200"})
    assert found.exit_code == 0, found.output
    assert "array[/i] and [bold]weights[/bold] with [red] ink." in found.output
    assert "markup[1].md" in found.output and "Index [/i] notes" in found.output


def test_an_unfinished_document_is_reported_through_the_api(live_api: LiveApi, tmp_path: Path) -> None:
    """Issue 28 item 3 through the API: a document queued by an earlier ingest and not done yet is not
    "unchanged"; the next ingest says it is unfinished, still queued or running."""
    key = live_api.issue_key("kites").secret
    doc = tmp_path / "kites.md"
    doc.write_text(TEXT)
    runner = _runner(tmp_path / "empty", key)
    queued = runner.invoke(app, ["ingest", str(doc), "--kb", "air", "--api", live_api.url])  # no worker yet
    assert queued.exit_code == 0 and "1 added" in queued.output, queued.output
    again = runner.invoke(app, ["ingest", str(doc), "--kb", "air", "--api", live_api.url], env={"COLUMNS": "300"})
    assert again.exit_code == 0, again.output
    assert "0 added, 0 updated, 0 unchanged, 1 unfinished from an earlier ingest, 0 deleted" in again.output
    assert "the 1 unfinished are still queued or running (--wait waits for them)" in again.output
    # Waiting for it (--wait) is tests/docvec_cli/test_ingest.py's, where the worker starts after the plan.


def test_odd_file_names_through_the_api(live_api: LiveApi, tmp_path: Path) -> None:
    """Issue 28 item 4 through the API: names that are not UTF-8 or hold a newline are keyed, a symlink out of
    the folder is left out, a name that cannot be a key is listed; the rest ingest and the run exits 1."""
    key = live_api.issue_key("odd").secret
    root = odd_folder(tmp_path / "docs", tmp_path / "elsewhere")
    refused = root.joinpath(*["d" * 200] * 3)
    refused.mkdir(parents=True)
    (refused / "far.md").write_text("# Far\n\nToo deep to be a key.\n")
    live_api.start_worker()
    runner = _runner(tmp_path / "empty", key)
    result = runner.invoke(app, ["ingest", str(root), "--kb", "odd", "--wait", "--api", live_api.url],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "5/5 documents done" in result.output
    assert "5 added, 0 updated, 0 unchanged, 0 deleted" in result.output
    assert "4 skipped (1 could not be read)" in result.output
    assert "far.md: its source key would be 609 characters, over the limit of 512" in result.output
    assert "escape.txt: a symlink to " in result.output and "not followed (--follow-symlinks" in result.output
    found = runner.invoke(app, ["search", "Espresso brewed hot water coffee", "--kb", "odd", "--json", "--api",
                                live_api.url])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)[0]["filename"] == LATIN1_NAME_SHOWN
