"""`docvec.ingest`: what a folder holds, read with care (odd names keyed, unreadable files and symlinks out of
the folder left out and listed), and the client's ingest of such a folder against a live API."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from common.uploads import MAX_SOURCE_ID_CHARS, check_source_id
from docvec import AsyncClient, Client
from docvec import ingest as planned
from docvec.ingest import SourceError, escape_name, scan_sources
from tests.api.live import LiveApi
from tests.docvec.folders import LATIN1_KEY, LATIN1_NAME, LATIN1_NAME_SHOWN, odd_folder, write_bytes

WAIT_S = 60.0


def test_escaped_names_are_stable_readable_and_distinct() -> None:
    assert escape_name("notes.md") == "notes.md" and escape_name("Café ☕.md") == "Café ☕.md"
    assert escape_name(os.fsdecode(LATIN1_NAME)) == LATIN1_KEY
    assert escape_name("line\nbreak") == "line\\nbreak" and escape_name("a\x01") == "a\\x01"
    # A name that already looks escaped keeps its own key: a backslash is escaped too.
    assert escape_name("caf\\xe9 notes.md") == "caf\\\\xe9 notes.md" != LATIN1_KEY
    names = ["a\\nb", "a\nb", "a\\\\nb", "a\udcff", "a\\xff", "a\xff", "a\\x7f", "a\x7f"]
    assert len({escape_name(n) for n in names}) == len(names)
    for name in names:
        check_source_id(escape_name(name))  # every escaped key is one the API takes


def test_a_folder_with_odd_names_is_keyed_and_its_links_are_decided(tmp_path: Path) -> None:
    root = odd_folder(tmp_path / "docs", tmp_path / "elsewhere")
    collected = scan_sources([root])
    keys = [s.key for s in collected.sources]
    assert keys == ["back\\\\slash.md", LATIN1_KEY, "line\\nbreak.md", "plain.md", "sub/deep.md"]
    assert scan_sources([root]).sources == collected.sources, "the same keys on every run"
    assert collected.sources[1].filename == LATIN1_NAME_SHOWN, "the stored name is readable"
    skipped = {Path(s.path).name: s for s in collected.skipped}
    assert set(skipped) == {"escape.txt", "alias.md", "loop"}
    assert "outside the folder: not followed (--follow-symlinks follows it)" in skipped["escape.txt"].reason
    assert "plain.md" in skipped["alias.md"].reason, "a link to a file ingested anyway: not a second document"
    assert "walked already" in skipped["loop"].reason
    assert collected.errors == [], "links decided by rule are listed, not errors"

    followed = scan_sources([root], follow_symlinks=True)
    assert "escape.txt" in [s.key for s in followed.sources]
    assert [s.key for s in scan_sources([root / "escape.txt"]).sources] == ["escape.txt"], "a file named is read"


def test_a_broken_link_a_refused_name_and_an_unreadable_file_are_skipped(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "docs"
    deep = root.joinpath(*["d" * 200] * 3)  # a key over the API's limit: a name that cannot be a key
    deep.mkdir(parents=True)
    write_bytes(deep / "too-long.md", "# Long\n\nfar down\n")
    write_bytes(root / "ok.md", "# Ok\n\nfine\n")
    write_bytes(root / "locked.md", "# Locked\n\nno entry\n")
    (root / "dangling.md").symlink_to("nowhere.md")
    real_hash = planned.sha256_file

    def unreadable(path: Path) -> str:  # as root, permissions cannot make a file unreadable: the read fails here
        if path.name == "locked.md":
            raise PermissionError(13, "Permission denied", str(path))
        return real_hash(path)

    monkeypatch.setattr(planned, "sha256_file", unreadable)
    collected = scan_sources([root])
    assert [s.key for s in collected.sources] == ["ok.md"]
    errors = {Path(s.path).name: s for s in collected.errors}
    assert set(errors) == {"too-long.md", "locked.md"}
    assert f"over the limit of {MAX_SOURCE_ID_CHARS}" in errors["too-long.md"].reason
    assert errors["locked.md"].reason == "cannot be read: Permission denied"
    assert collected.kept_keys == ["locked.md"], "a sync keeps the document of a file it could not read"
    (dangling,) = [s for s in collected.skipped if not s.error]
    assert dangling.reason == "a broken symlink: its target does not exist"
    with pytest.raises(SourceError, match="too-long.md: its source key would be 614 characters"):
        planned.collect_sources([root])
    with pytest.raises(SourceError, match=r"no files to ingest \(1 left out: .*locked.md: cannot be read"):
        scan_sources([root / "locked.md"])


def test_the_client_ingests_a_folder_with_odd_names(live_api: LiveApi, api_key: str, tmp_path: Path) -> None:
    root = odd_folder(tmp_path / "docs", tmp_path / "elsewhere")
    with Client(live_api.url, api_key) as docvec:
        result = docvec.ingest("odd", root, wait=True, timeout_s=WAIT_S)
        assert sorted(result.plan.added) == ["back\\\\slash.md", LATIN1_KEY, "line\\nbreak.md", "plain.md",
                                             "sub/deep.md"]
        assert result.failed == {} and len(result.tasks) == 5
        assert {Path(s.path).name for s in result.skipped} == {"escape.txt", "alias.md", "loop"}
        documents = {d.source_id: d for d in docvec.list_documents("odd")}
        assert documents[LATIN1_KEY].filename == LATIN1_NAME_SHOWN and documents[LATIN1_KEY].status == "done"
        hits = docvec.search("odd", "Espresso is brewed by forcing hot water through coffee.", top_k=1)
        assert hits[0].filename == LATIN1_NAME_SHOWN
        assert all("secret" not in h.text for h in docvec.search("odd", "the host's secret", top_k=10))

        again = docvec.ingest("odd", root, wait=True, timeout_s=WAIT_S)
        assert again.plan.summary() == "0 added, 0 updated, 5 unchanged, 0 deleted", "stable keys"


async def test_a_lone_surrogate_key_is_a_clear_400(live_api: LiveApi, api_key: str) -> None:
    """JSON can spell a lone surrogate (`\\udce9`); the API refuses it as a key, never stores or crashes on it."""
    async with AsyncClient(live_api.url, api_key) as client:
        await client.ensure_kb("odd")
    body = b'{"sources": {"caf\\udce9.md": "' + b"a" * 64 + b'"}, "dry_run": true}'
    async with httpx.AsyncClient(base_url=f"{live_api.url}/api/v1",
                                 headers={"Authorization": f"Bearer {api_key}"}) as http:
        response = await http.post("/kbs/odd/sync", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "not valid Unicode" in error["message"]
