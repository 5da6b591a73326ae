"""`api.multipart.UploadReader`: parts come back as soon as they are complete, whatever the chunking of
the body, with their names, file names and bytes; limits and broken bodies are typed errors. File names
are read as browsers, curl and httpx encode them (`parse_disposition`)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.multipart import MAX_FIELD_BYTES, UploadReader, parse_disposition
from common.errors import InvalidRequest, LimitExceeded

BOUNDARY = "xYz123"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _field(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _read(body: bytes, chunk: int, *, max_file_bytes: int = 1 << 20, max_parts: int = 10) -> list[tuple[int, object]]:
    """(index of the chunk that completed it, (name, filename, content)) for every part."""
    reader = UploadReader(CONTENT_TYPE, max_file_bytes=max_file_bytes, max_parts=max_parts)
    seen: list[tuple[int, object]] = []
    for index, start in enumerate(range(0, len(body), chunk)):
        seen += [(index, (p.name, p.filename, p.content())) for p in reader.feed(body[start:start + chunk])]
    reader.finish()
    return seen


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 16])
def test_parts_come_back_whole_whatever_the_chunking(chunk: int) -> None:
    body = _body(_field("source_id", b"notes/a.md"), _field("files", b"# A\r\n\r\ntext --xYz12 almost", "a.md"),
                 _field("files", b"\x00\xffbinary", "b.bin"))
    parts = [part for _, part in _read(body, chunk)]
    assert parts == [("source_id", None, b"notes/a.md"), ("files", "a.md", b"# A\r\n\r\ntext --xYz12 almost"),
                     ("files", "b.bin", b"\x00\xffbinary")]


def test_a_file_is_returned_before_the_rest_of_the_body_arrives() -> None:
    first = _field("files", b"a" * 1000, "a.txt")
    body = _body(first, _field("files", b"b" * 5000, "b.txt"))
    completed = _read(body, 512)
    # a.txt is complete in the chunk that holds the next boundary, long before b.txt's bytes end
    assert completed[0][0] <= len(first) // 512 + 1 < completed[1][0]


def test_limits_are_enforced_while_the_bytes_arrive() -> None:
    with pytest.raises(LimitExceeded, match="max_upload_bytes"):
        _read(_body(_field("files", b"x" * 2000, "big.txt")), 100, max_file_bytes=1000)
    with pytest.raises(LimitExceeded, match="api.max_upload_parts"):
        _read(_body(*[_field("files", b"x", f"{i}.txt") for i in range(4)]), 100, max_parts=3)
    with pytest.raises(LimitExceeded, match="form field 'source_id'"):
        _read(_body(_field("source_id", b"s" * (MAX_FIELD_BYTES + 1))), 4096)


def test_broken_bodies_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequest, match="multipart/form-data"):
        UploadReader("application/x-www-form-urlencoded", max_file_bytes=10, max_parts=10)
    with pytest.raises(InvalidRequest, match="closing multipart boundary"):
        _read(_field("files", b"cut off", "a.txt"), 64)
    with pytest.raises(InvalidRequest, match="Content-Disposition"):
        _read(_body(f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n".encode()), 64)
    reader = UploadReader(CONTENT_TYPE, max_file_bytes=10, max_parts=10)
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        [part.text() for part in reader.feed(_body(_field("source_id", b"\xff\xfe")))]


# ------------------------------------------------------------------ a part's Content-Disposition (issue 28)


@pytest.mark.parametrize(("header", "expected"), [
    (b'form-data; name="files"; filename="a.md"', {"name": "files", "filename": "a.md"}),
    (b"Form-Data; NAME=files; FileName=plain.md", {"name": "files", "filename": "plain.md"}),
    # browsers, curl >= 7.81: `"`, CR, LF percent-encoded (either case); nothing else is decoded
    (b'form-data; name="files"; filename="a%22b%0d%0Ac.md"', {"name": "files", "filename": 'a"b\r\nc.md'}),
    (b'form-data; name="files"; filename="100%25 %41.md"', {"name": "files", "filename": "100%25 %41.md"}),
    # curl before 7.81 and httpx: backslash escapes; a browser's lone backslash is itself
    (b'form-data; name="files"; filename="say \\"hi\\" \\\\ x.md"', {"name": "files", "filename": 'say "hi" \\ x.md'}),
    (b'form-data; name="files"; filename="dir\\sub.md"', {"name": "files", "filename": "dir\\sub.md"}),
    (b'form-data; name="files"; filename="ends with\\"', {"name": "files", "filename": "ends with\\"}),
    # a raw quote inside a value (no client sends one) is kept; `;` inside quotes is part of the name
    (b'form-data; name="files"; filename="x"y.md"', {"name": "files", "filename": 'x"y.md'}),
    (b'form-data; filename="a; b=c.md"; name="files"', {"name": "files", "filename": "a; b=c.md"}),
    # RFC 5987 `filename*` wins over `filename`; an unknown charset is ignored
    (b"form-data; name=files; filename=\"e.md\"; filename*=UTF-8''%C3%A9.md", {"name": "files", "filename": "é.md"}),
    (b"form-data; name=files; filename*=iso-8859-1'fr'%E9t%E9.md", {"name": "files", "filename": "été.md"}),
    (b"form-data; name=files; filename=\"e.md\"; filename*=koi8-r''%C1.md", {"name": "files", "filename": "e.md"}),
    (b'form-data; name="source_id"', {"name": "source_id"}),
])
def test_content_disposition_is_read_as_clients_write_it(header: bytes, expected: dict[str, str]) -> None:
    assert parse_disposition(header) == ("form-data", expected)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("tail", ["; " * 500_000, "; " + "= " * 300_000, "; " + "=;" * 300_000,
                                  ";" + " " * 1_000_000 + "a"])
def test_a_header_of_separators_is_read_in_linear_time(tail: str) -> None:
    """Parsed on the event loop: rescanning a run of `; ` from each position (hours for these) would freeze it."""
    kind, params = parse_disposition(f'form-data; name="files"{tail}'.encode())
    assert kind == "form-data" and params["name"] == "files"


def test_a_raw_line_break_in_a_name_is_an_invalid_request_not_a_quote_in_the_name() -> None:
    with pytest.raises(InvalidRequest, match="no closing quote"):
        parse_disposition(b'form-data; name="files"; filename="evil')
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"evil\r\n"
            f"X-Injected: yes.md\"\r\n\r\nx\r\n--{BOUNDARY}--\r\n").encode()
    with pytest.raises(InvalidRequest, match="%0D%0A"):
        _read(body, 64)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40).filter(lambda s: "%" not in s))
def test_any_name_httpx_sends_comes_back_whole(name: str) -> None:
    """httpx percent-encodes `"` and C0 controls and doubles backslashes; the name read back is the name sent
    (`%` left out: a literal `%22` in a name is ambiguous with an encoded quote, for every server)."""
    request = httpx.Request("POST", "http://docvec.test/", files=[("files", (name, b"data"))])
    content_type = request.headers["content-type"]
    reader = UploadReader(content_type, max_file_bytes=1 << 20, max_parts=10)
    parts = reader.feed(request.read())
    reader.finish()
    assert [(p.name, p.filename, p.content()) for p in parts] == [("files", name, b"data")]
