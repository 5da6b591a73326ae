"""Excel (.xlsx) via openpyxl in read-only (streaming) mode: one section per worksheet.

Each sheet's section has the heading path (sheet name,) and one " | "-joined line per non-empty row
(trailing empty cells trimmed); cached values are used for formulas. At most `MAX_ROWS_PER_SHEET`
rows of a sheet are read, so a sheet padded with a million empty rows stays cheap. The ZIP is checked
for bombs first.
"""

from __future__ import annotations

import datetime as dt
import io

import openpyxl  # type: ignore[import-untyped]

from common.parsing.base import ParsedDocument
from common.parsing.builder import DocumentBuilder
from common.parsing.office import check_zip, damaged
from common.parsing.sniff import XLSX
from common.settings import LimitsSettings

MAX_ROWS_PER_SHEET = 200_000
_KIND = "Excel (.xlsx)"


class XlsxParser:
    """Parser for Excel workbooks."""

    format = XLSX

    def __init__(self, limits: LimitsSettings) -> None:
        self._limits = limits

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        check_zip(data, filename, _KIND, self._limits)
        try:
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:  # openpyxl/XML parsers fail in open-ended ways on damaged parts
            raise damaged(filename, _KIND, exc) from exc
        try:
            builder = DocumentBuilder()
            for sheet in workbook.worksheets:
                builder.section(_render_sheet(sheet), (str(sheet.title),))
            title = workbook.properties.title or ""
        except Exception as exc:  # as above, for the sheets' XML that is only read while iterating
            raise damaged(filename, _KIND, exc) from exc
        finally:
            workbook.close()
        return builder.build(self.format, title=title, pages=None)


def _render_sheet(sheet: object) -> str:
    lines: list[str] = []
    rows = sheet.iter_rows(values_only=True)  # type: ignore[attr-defined]
    for index, row in enumerate(rows):
        if index >= MAX_ROWS_PER_SHEET:
            break
        cells = [_cell_text(value) for value in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value).split())
