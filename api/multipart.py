"""A multipart upload read as it streams in, one part at a time.

FastAPI's `File()` parameters have Starlette parse the whole form first, spooling every file to a
temporary file, before the route runs; the route then held every file in memory at once. Here the
route feeds the request's body chunks to python-multipart's parser and gets each part back as soon as
it is complete: the caller stores one file before the next is read, so one file at a time is in
memory and nothing is spooled. Sizes are checked while the bytes arrive (a file within
`max_file_bytes`, a text field within `MAX_FIELD_BYTES`, at most `max_parts` parts).

A part's Content-Disposition is read here (`parse_disposition`), not by python-multipart's
`parse_options_header`, which keeps the opening quote of a value cut short by a raw line break and
drops `filename*`: names come back as browsers, curl and httpx send them (see that function).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from common.errors import InvalidRequest, LimitExceeded
from common.uploads import check_upload_size

MAX_FIELD_BYTES = 64 * 1024  # a text field (a source id is far shorter)
MAX_HEADER_BYTES = 16 * 1024  # one part's headers together

# What clients percent-encode in a form's field and file names: `"` and C0 controls (browsers and curl
# >= 7.81: `"`, CR, LF as RFC 7578 section 4.2 and the HTML standard describe; httpx: every C0 but ESC).
# Nothing else is decoded: a file really named `100%25.txt` is sent, and read, as it is.
_FORM_ESCAPE = re.compile(r"%(22|[01][0-9A-Fa-f])")
# Separators are skipped once, possessively: a name pattern that began with them rescanned a run of `; `
# from each of its positions (16 KiB of them held the event loop ~1 s).
_SEPARATORS = re.compile(r"[\s;]*+")
_PARAM_NAME = re.compile(r"([^\s;=]+)\s*(=\s*)?")
_VALUE_END = re.compile(r"\s*(;|\Z)")
_EXTENDED_CHARSETS = frozenset({"utf-8", "iso-8859-1", "us-ascii"})


def parse_disposition(header: bytes) -> tuple[str, dict[str, str]]:
    """A part's `Content-Disposition` header: its type (lower case) and its parameters (names lower case).

    A quoted value ends at the quote that is followed by `;` or the end of the header; inside it `\\"` and
    `\\\\` are a quote and a backslash (curl before 7.81, httpx), another backslash is itself (a browser
    sends a name's backslashes as they are), and a quote followed by more of the value is kept. Then
    `%22` and `%00`-`%1F` are decoded (`_FORM_ESCAPE`), and `filename*=charset'lang'percent-encoded`
    (RFC 5987; UTF-8, ISO-8859-1 or US-ASCII), where given, takes the place of `filename`. A quoted value
    with no closing quote is an InvalidRequest: a raw CR LF in a name cuts the header short, and what
    follows it would be read as a header of its own, so the name cannot be known."""
    kind, _, rest = header.decode("utf-8", "replace").partition(";")
    params: dict[str, str] = {}
    pos = 0
    while (pos := _SEPARATORS.match(rest, pos).end()) < len(rest):  # type: ignore[union-attr]  # (matches "")
        match = _PARAM_NAME.match(rest, pos)
        if match is None:  # a stray `=` or the like: skip to the next parameter
            following = rest.find(";", pos + 1)
            pos = len(rest) if following < 0 else following
            continue
        name, pos = match.group(1).lower(), match.end()
        if match.group(2) is None:
            params.setdefault(name, "")
            continue
        if rest.startswith('"', pos):
            value, pos = _quoted(rest, pos + 1)
        else:
            following = rest.find(";", pos)
            end = len(rest) if following < 0 else following
            value, pos = rest[pos:end].strip(), end
        params[name] = value if name.endswith("*") else _FORM_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)
    extended = _extended_value(params.pop("filename*", None))
    if extended is not None:
        params["filename"] = extended
    return kind.strip().lower(), params


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The quoted string that opened just before `start`, and the position after its closing quote."""
    out: list[str] = []
    pos = start
    while pos < len(text):
        char = text[pos]
        if char == "\\" and text[pos + 1 : pos + 2] in ('"', "\\"):
            out.append(text[pos + 1])
            pos += 2
        elif char == '"' and _VALUE_END.match(text, pos + 1):
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    last = len(text.rstrip()) - 1
    if last >= start and text[last] == '"':
        # A browser's name that ends with a backslash (`"a\\"`): the last quote closes it, as sent.
        return text[start:last], len(text)
    raise InvalidRequest(
        "a part's Content-Disposition has a quoted name with no closing quote (a raw line break in a file "
        "name ends the header line): send quotes and line breaks in names percent-encoded (%22, %0D%0A) "
        "as browsers, curl and httpx do")


def _extended_value(value: str | None) -> str | None:
    """An RFC 5987 value, `charset'language'percent-encoded`, decoded; None if absent or unreadable."""
    if value is None or value.count("'") < 2:
        return None
    charset, _, rest = value.partition("'")
    encoded = rest.partition("'")[2]
    if charset.strip().lower() not in _EXTENDED_CHARSETS:
        return None
    return unquote(encoded, encoding=charset.strip().lower(), errors="replace")


@dataclass(slots=True)
class Part:
    """One part of the body: a form field's name, the file name if it is a file, and its bytes (in one
    growing buffer that `content` hands over without a copy: about one file's size at the peak, where a
    list of the body's chunks joined took two)."""

    name: str
    filename: str | None
    content_type: str
    buffer: io.BytesIO = field(default_factory=io.BytesIO)
    size_bytes: int = 0

    def content(self) -> bytes:
        return self.buffer.getvalue()

    def text(self) -> str:
        try:
            return self.content().decode()
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"form field {self.name!r} is not UTF-8 text") from exc


class UploadReader:
    """Feed it the body's chunks; it returns the parts each chunk completed (see the module doc)."""

    def __init__(self, content_type: str, *, max_file_bytes: int, max_parts: int) -> None:
        media_type, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if media_type != b"multipart/form-data" or not boundary:
            raise InvalidRequest("send the files as multipart/form-data (a 'files' field per file)")
        self._max_file_bytes, self._max_parts = max_file_bytes, max_parts
        self._parts = 0
        self._done: list[Part] = []
        self._current: Part | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._ended = False
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        })

    def feed(self, chunk: bytes) -> list[Part]:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.close()
            raise InvalidRequest(f"the upload is not a well-formed multipart body: {exc}") from exc
        except BaseException:
            self.close()
            raise
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        """Let go of the bytes of the parts not yet returned (a refused or broken body), now, whoever still
        holds the parts or this reader (a traceback's frames, until a collection)."""
        for part in [*self._done, *([self._current] if self._current is not None else [])]:
            part.buffer.close()
        self._current = None
        self._done = []

    def finish(self) -> None:
        """The body has ended: it must have ended as a multipart body does."""
        if not self._ended:
            raise InvalidRequest("the upload ended before its closing multipart boundary: send it again")

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise LimitExceeded(f"the upload has more than {self._max_parts} parts (files and fields; "
                                "api.max_upload_parts): send fewer files per request")
        self._headers = {}
        self._header_bytes = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            raise LimitExceeded(f"a part's headers are over {MAX_HEADER_BYTES:,} bytes")

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_disposition(self._headers.get(b"content-disposition", b""))
        if disposition != "form-data" or "name" not in options:
            raise InvalidRequest("every part of the upload needs a 'Content-Disposition: form-data; name=...' header")
        self._current = Part(
            name=options["name"],
            filename=options.get("filename"),
            content_type=self._headers.get(b"content-type", b"").decode("latin-1"),
        )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        assert part is not None, "python-multipart sends a part's headers before its data"
        part.size_bytes += end - start
        if part.filename is not None:
            check_upload_size(part.filename, part.size_bytes, self._max_file_bytes)
        elif part.size_bytes > MAX_FIELD_BYTES:
            raise LimitExceeded(f"form field {part.name!r} is over {MAX_FIELD_BYTES:,} bytes")
        part.buffer.write(memoryview(data)[start:end])

    def _on_part_end(self) -> None:
        if self._current is not None:
            self._done.append(self._current)
        self._current = None

    def _on_end(self) -> None:
        self._ended = True
