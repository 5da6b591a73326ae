"""A multipart upload read as it streams in, one part at a time.

FastAPI's `File()` parameters have Starlette parse the whole form first, spooling every file to a
temporary file, before the route runs; the route then held every file in memory at once. Here the
route feeds the request's body chunks to python-multipart's parser and gets each part back as soon as
it is complete: the caller stores one file before the next is read, so one file at a time is in
memory and nothing is spooled. Sizes are checked while the bytes arrive (a file within
`max_file_bytes`, a text field within `MAX_FIELD_BYTES`, at most `max_parts` parts).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from common.errors import InvalidRequest, LimitExceeded
from common.uploads import check_upload_size

MAX_FIELD_BYTES = 64 * 1024  # a text field (a source id is far shorter)
MAX_HEADER_BYTES = 16 * 1024  # one part's headers together


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
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise InvalidRequest("every part of the upload needs a 'Content-Disposition: form-data; name=...' header")
        filename = options.get(b"filename")
        self._current = Part(
            name=options[b"name"].decode("utf-8", "replace"),
            filename=None if filename is None else filename.decode("utf-8", "replace"),
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
