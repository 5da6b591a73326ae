"""CSV/TSV: each row becomes a line "column: value; column: value", rows grouped into sections.

The delimiter is sniffed from the first lines (see `sniff.csv_delimiter`; "," when unclear). The
first row is the header. Ragged rows are kept: missing cells are omitted and extra cells are named
"column N". Rows are grouped `ROWS_PER_SECTION` to a section so a big table is not one huge block.
A row wider than `MAX_COLUMNS` (a spreadsheet's width) is refused where it is read: a million-column
row would render to tens of millions of characters ("column 123456: value; ...") and tens of thousands
of chunks of numbers, none of which a search could use.
"""

from __future__ import annotations

import csv
import io
import sys

from common.errors import CorruptDocument, LimitExceeded
from common.parsing.base import ParsedDocument
from common.parsing.builder import DocumentBuilder
from common.parsing.sniff import CSV, csv_delimiter, decode_text

ROWS_PER_SECTION = 50
MAX_COLUMNS = 16_384
"""Excel's and LibreOffice's sheet width (column XFD): every table a spreadsheet can hold fits."""


class CsvParser:
    """Parser for delimited text tables."""

    format = CSV

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        return self.parse_text(decode_text(data, filename), filename)

    def parse_text(self, text: str, filename: str) -> ParsedDocument:
        delimiter = csv_delimiter(text) or ("\t" if filename.lower().endswith((".tsv", ".tab")) else ",")
        # One field may legitimately be as long as the whole (size-limited) upload.
        csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        builder = DocumentBuilder()
        try:
            header = [" ".join(name.split()) for name in _checked(next(reader, []), reader.line_num, filename)]
            lines: list[str] = []
            for row in reader:
                line = _render_row(header, _checked(row, reader.line_num, filename))
                if line:
                    lines.append(line)
                if len(lines) >= ROWS_PER_SECTION:
                    builder.section("\n".join(lines))
                    lines.clear()
            builder.section("\n".join(lines))
        except csv.Error as exc:
            raise CorruptDocument(
                f'file "{filename}" is not valid CSV (line {reader.line_num}: {exc}); '
                "fix the quoting or export it again"
            ) from exc
        if not builder.sections and any(header):  # a header-only table still says something
            builder.section(" | ".join(header))
        return builder.build(self.format, title=" | ".join(header)[:200])


def _checked(row: list[str], line: int, filename: str) -> list[str]:
    if len(row) > MAX_COLUMNS:
        raise LimitExceeded(
            f'file "{filename}" has a row of {len(row)} columns (line {line}), more than the {MAX_COLUMNS} a '
            "spreadsheet holds; a table that wide is no text to search: split it into narrower tables (or "
            "transpose it) and upload those"
        )
    return row


def _render_row(header: list[str], row: list[str]) -> str:
    pairs = []
    for index, value in enumerate(row):
        value = " ".join(value.split())
        if not value:
            continue
        name = header[index] if index < len(header) and header[index] else f"column {index + 1}"
        pairs.append(f"{name}: {value}")
    return "; ".join(pairs)
