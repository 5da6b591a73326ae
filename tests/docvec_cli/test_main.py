"""`docvec` commands as a user meets them: help that reads cleanly, `docvec api`'s admin key, and
`docvec ingest` on a folder with odd file names (in-process, the real `openai` embedding backend against a
local endpoint)."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from docvec_cli.auth import read_key_file
from docvec_cli.main import app
from tests.docvec.folders import LATIN1_KEY, odd_folder
from tests.docvec_cli.embedserver import EmbedServer

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0


def _docvec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "docvec_cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, env={**os.environ, "COLUMNS": "160", **(env or {})})


@pytest.mark.parametrize("command", [["--help"], ["ingest", "--help"], ["tasks", "list", "--help"],
                                     ["search", "--help"], ["vectordb", "--help"]])
def test_help_reads_as_click_writes_it(command: list[str]) -> None:
    """Issue 28 item 10: no `--help <bool>`, no `{paths}...`: flags show no type, options click's metavar."""
    result = _docvec(*command)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for odd in ("<bool>", "<str>", "<int>", "<list", "{paths}", "{query}"):
        assert odd not in text, f"{odd!r} in `docvec {' '.join(command)}`:\n{text}"
    assert "--help" in text and "Show this message and exit." in text


def test_ingest_help_names_its_arguments_and_option_values() -> None:
    text = _docvec("ingest", "--help").stdout
    assert "Usage: docvec ingest [OPTIONS] PATHS..." in text and re.search(r"\*\s+PATHS\.\.\.\s+files or", text)
    assert re.search(r"--kb\s+TEXT\s+knowledge base name", text), text
    assert re.search(r"--wait\s+show progress", text) and re.search(r"--follow-symlinks\s+follow symlinks", text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_api(env: dict[str, str], port: int) -> str:
    """Run `docvec api` until it answers /healthz, stop it with SIGTERM; its output."""
    process = subprocess.Popen([sys.executable, "-m", "docvec_cli", "api", "--port", str(port)], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"docvec api exited with {process.returncode}"
            assert time.monotonic() < deadline, "docvec api did not answer /healthz"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    return output


def test_docvec_api_creates_the_admin_key_like_up(tmp_path: Path, redis_url: str, embed: EmbedServer) -> None:
    """Issue 28 item 10: `docvec api` alone creates `<data_dir>/admin.key` on first run and prints the key once
    (as `docvec up` does); the next start reuses it and says where it is."""
    data_dir = tmp_path / "data"
    env = {**os.environ, **embed.env(), "DOCVEC_DATA_DIR": str(data_dir), "DOCVEC_REDIS__URL": redis_url,
           "DOCVEC_REDIS__PREFIX": f"api{uuid.uuid4().hex[:8]}", "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "300"}
    port = _free_port()
    first = _serve_api(env, port)
    key_path = data_dir / "admin.key"
    key = read_key_file(key_path)
    assert key is not None and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert f"new admin key (stored in {key_path}): {key}" in first, first

    second = _serve_api(env, port)
    assert read_key_file(key_path) == key, "the key is created once"
    assert f"admin key: stored in {key_path} (`docvec keys show-admin` prints it)" in second, second
    assert key not in second, "an existing key is not printed again"
    shown = _docvec("keys", "show-admin", env={"DOCVEC_DATA_DIR": str(data_dir)})
    assert shown.returncode == 0 and shown.stdout.strip() == key, "the key is a valid admin key"


def test_in_process_ingest_of_odd_names(tmp_path: Path, redis_url: str, embed: EmbedServer) -> None:
    """Issue 28 item 4, in-process: a name that is not UTF-8 (a 280-line traceback, nothing ingested) and one
    with a newline (the run aborted, even --dry-run) are keyed; a symlink out of the folder is left out unless
    --follow-symlinks; one name that cannot be a key is listed at the end and the run exits 1; the rest ingest."""
    root = odd_folder(tmp_path / "docs", tmp_path / "elsewhere")
    refused = root.joinpath(*["d" * 200] * 3)
    refused.mkdir(parents=True)
    (refused / "far.md").write_text("# Far\n\nToo deep to be a key.\n")
    runner = CliRunner(env={**embed.env(), "DOCVEC_DATA_DIR": str(tmp_path / "data"), "DOCVEC_REDIS__URL": redis_url,
                            "DOCVEC_REDIS__PREFIX": f"odd{uuid.uuid4().hex[:8]}", "DOCVEC_API_URL": None,
                            "COLUMNS": "400"})

    dry = runner.invoke(app, ["ingest", str(root), "--kb", "odd", "--dry-run"])
    assert dry.exit_code == 1, dry.output
    assert f"would add {LATIN1_KEY}" in dry.output and "would add line\\nbreak.md" in dry.output
    assert "would add escape.txt" not in dry.output
    assert "dry run: 5 added, 0 updated, 0 unchanged, 0 deleted; 4 skipped (1 could not be read)" in dry.output
    followed = runner.invoke(app, ["ingest", str(root), "--kb", "odd", "--dry-run", "--follow-symlinks"])
    assert "would add escape.txt" in followed.output, followed.output

    ingested = runner.invoke(app, ["ingest", str(root), "--kb", "odd", "--wait"])
    assert ingested.exit_code == 1, ingested.output
    assert "5/5 documents done" in ingested.output
    assert "skipped 4 file(s):" in ingested.output
    assert "error " in ingested.output and "far.md: its source key would be 609 characters" in ingested.output
    assert "left out " in ingested.output and "alias.md: a symlink to plain.md (ingested under that name)" in \
        ingested.output
    again = runner.invoke(app, ["ingest", str(root), "--kb", "odd"])
    assert "0 added, 0 updated, 5 unchanged, 0 deleted" in again.output, again.output
