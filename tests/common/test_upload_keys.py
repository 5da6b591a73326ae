"""`common.uploads`: an upload's stored file name and the source key it gets when none is given (issue 28,
item 5): the sanitized relative path, or a key of the content for a nameless upload."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.uploads import MAX_SOURCE_ID_CHARS, check_source_id, safe_filename, upload_key

DIGEST = hashlib.sha256(b"content").hexdigest()


@pytest.mark.parametrize(("sent", "key", "filename"), [
    ("a/b/c.md", "a/b/c.md", "c.md"),
    ("x/c.md", "x/c.md", "c.md"),
    ("../../etc/passwd", "etc/passwd", "passwd"),
    ("/abs//./notes.md", "abs/notes.md", "notes.md"),
    ("win\\dir\\report.md", "win/dir/report.md", "report.md"),
    ("C:\\Users\\me\\plan.md", "Users/me/plan.md", "plan.md"),
    ("a/b/..", "a/b", "b"),
    ("line\r\nbreak\x7f.md", "line_break_.md", "line_break_.md"),
    ("...hidden", "...hidden", "hidden"),
    (" spaced .md", " spaced .md", "spaced .md"),
])
def test_a_named_upload_is_keyed_by_its_relative_path(sent: str, key: str, filename: str) -> None:
    assert upload_key(sent, DIGEST) == key
    assert safe_filename(sent) == filename


@pytest.mark.parametrize("sent", [None, "", ".", "..", "/", "../..", " ", "./ /."])
def test_a_nameless_upload_is_keyed_by_its_content(sent: str | None) -> None:
    assert upload_key(sent, DIGEST) == f"upload-{DIGEST[:16]}"
    assert upload_key(sent, hashlib.sha256(b"other").hexdigest()) != upload_key(sent, DIGEST)
    assert safe_filename(sent or "") == "document"


def test_a_path_too_long_for_a_key_is_cut_to_its_end_after_a_hash_of_the_whole() -> None:
    deep = "/".join(["folder"] * 200)
    one, two = upload_key(f"{deep}/one/report.md", DIGEST), upload_key(f"{deep}/two/report.md", DIGEST)
    assert one != two and len(one) <= MAX_SOURCE_ID_CHARS and len(two) <= MAX_SOURCE_ID_CHARS
    assert one.endswith("/folder/one/report.md") and one == upload_key(f"{deep}/one/report.md", DIGEST)
    assert safe_filename(f"{deep}/one/report.md") == "report.md"


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=700))
def test_every_name_gives_a_safe_relative_key(name: str) -> None:
    key = upload_key(name, DIGEST)
    assert check_source_id(key) == key  # non-empty, within the length limit, no control characters
    assert not key.startswith("/") and "\\" not in key
    assert not {".", ".."} & set(key.split("/")) and "//" not in key
    assert key == upload_key(name, DIGEST)  # stable
    filename = safe_filename(name)
    assert 0 < len(filename) <= 255 and "/" not in filename and "\\" not in filename
