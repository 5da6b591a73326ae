"""PDF, Office, CSV and JSON parsers (`common/parsing/{pdf,docx,xlsx,pptx,csv,jsonfmt}.py`)."""

from __future__ import annotations

import pytest

from common.errors import LimitExceeded
from common.parsing import parse_document
from common.parsing.base import ParsedDocument
from common.settings import LimitsSettings
from tests.common.docgen import make_docx, make_pdf, make_pptx, make_xlsx

LIMITS = LimitsSettings()


def _offsets_hold(doc: ParsedDocument) -> bool:
    return all(doc.text[s.start_char : s.start_char + len(s.text)] == s.text for s in doc.sections)


def test_pdf_sections_carry_pages() -> None:
    doc = parse_document(make_pdf(["Intro line\nmore", "Second page"]), "misnamed.txt", limits=LIMITS)
    assert doc.format == "pdf"
    assert doc.pages == 2
    assert [(s.page, s.text) for s in doc.sections] == [(1, "Intro line\nmore"), (2, "Second page")]
    assert doc.title == "Intro line"
    assert _offsets_hold(doc)


def test_pdf_with_only_an_owner_password_is_read() -> None:
    data = make_pdf(["open text"], user_password="", owner_password="owner", algorithm="RC4-128")
    assert parse_document(data, "a.pdf", limits=LIMITS).sections[0].text == "open text"


def _build_docx(document: object) -> None:
    document.add_heading("Guide", level=1)  # type: ignore[attr-defined]
    document.add_paragraph("Intro.")  # type: ignore[attr-defined]
    document.add_heading("Install", level=2)  # type: ignore[attr-defined]
    document.add_paragraph("Run it.")  # type: ignore[attr-defined]
    table = document.add_table(rows=2, cols=2)  # type: ignore[attr-defined]
    for (row, col), text in {(0, 0): "Name", (0, 1): "Age", (1, 0): "Ann", (1, 1): "31"}.items():
        table.cell(row, col).text = text
    document.add_heading("Usage", level=1)  # type: ignore[attr-defined]
    document.add_paragraph("Use it.")  # type: ignore[attr-defined]


def test_docx_headings_and_tables() -> None:
    doc = parse_document(make_docx(_build_docx), "report.bin", limits=LIMITS)
    assert doc.format == "docx"
    assert [(s.heading_path, s.text) for s in doc.sections] == [
        (("Guide",), "Intro."),
        (("Guide", "Install"), "Run it."),
        (("Guide", "Install"), "Name | Age\nAnn | 31"),
        (("Usage",), "Use it."),
    ]
    assert doc.title == "Guide"
    assert _offsets_hold(doc)


def test_docx_of_headings_only_is_its_headings() -> None:
    def build(document: object) -> None:
        document.add_heading("Kayaks", level=1)  # type: ignore[attr-defined]
        document.add_heading("Calm lakes", level=2)  # type: ignore[attr-defined]
        document.add_heading("Rivers", level=2)  # type: ignore[attr-defined]

    doc = parse_document(make_docx(build), "kayaks.docx", limits=LIMITS)
    assert [(s.heading_path, s.text) for s in doc.sections] == [
        (("Kayaks", "Calm lakes"), "Calm lakes"),
        (("Kayaks", "Rivers"), "Rivers"),
    ]
    assert _offsets_hold(doc)


def test_xlsx_one_section_per_sheet() -> None:
    data = make_xlsx({"People": [["Name", "Age"], ["Ann", 31], [None, None], ["Bob", 4.0]], "Blank": []})
    doc = parse_document(data, "book.xlsx", limits=LIMITS)
    assert doc.format == "xlsx"
    assert [(s.heading_path, s.text) for s in doc.sections] == [(("People",), "Name | Age\nAnn | 31\nBob | 4")]


def test_pptx_one_section_per_slide() -> None:
    doc = parse_document(make_pptx([("Welcome", "Hello all"), ("Plan", "Step one")]), "deck.pptx", limits=LIMITS)
    assert doc.format == "pptx"
    assert doc.pages == 2
    assert [(s.heading_path, s.text, s.page) for s in doc.sections] == [
        (("Welcome",), "Hello all", 1),
        (("Plan",), "Step one", 2),
    ]
    assert _offsets_hold(doc)


def test_a_title_only_slide_is_its_title() -> None:
    doc = parse_document(make_pptx([("Welcome", "Hello all"), ("Questions?", "")]), "deck.pptx", limits=LIMITS)
    assert [(s.heading_path, s.text, s.page) for s in doc.sections] == [
        (("Welcome",), "Hello all", 1),
        (("Questions?",), "Questions?", 2),
    ]
    assert _offsets_hold(doc)


def test_csv_rows_become_named_values() -> None:
    doc = parse_document(b"name;age\nAnn;31\nBob;42\n", "people.txt", limits=LIMITS)
    assert doc.format == "csv"
    assert doc.sections[0].text == "name: Ann; age: 31\nname: Bob; age: 42"


def test_a_csv_row_wider_than_a_spreadsheet_is_refused_at_once() -> None:
    """A million-column row (7 MB) is not rendered into 23 M characters and 44,000 chunks: a row wider
    than Excel's 16,384 columns is refused where it is read."""
    wide = ",".join(str(100_000 + i) for i in range(1_000_000))
    with pytest.raises(LimitExceeded) as caught:
        parse_document(f"name,value\nAnn,31\n{wide}\nBob,42\n".encode(), "wide.csv", limits=LIMITS)
    message = caught.value.message
    assert '"wide.csv"' in message and "1000000 columns" in message and "line 3" in message
    assert "16384" in message and "split it" in message
    doc = parse_document(("a,b\n" + ",".join(["7"] * 16_384) + "\n").encode(), "widest.csv", limits=LIMITS)
    assert doc.sections[0].text.startswith("a: 7; b: 7; column 3: 7")


def test_prose_with_commas_is_not_csv() -> None:
    doc = parse_document(b"Hello, world.\nNo commas here\nOne, two, three.\n", "notes.txt", limits=LIMITS)
    assert doc.format == "text"


def test_json_is_flattened_to_key_paths() -> None:
    data = b'{"title": "T", "items": [{"name": "a", "tags": ["x"]}, {"name": "b", "ok": true}], "none": null}'
    doc = parse_document(data, "data.bin", limits=LIMITS)
    assert doc.format == "json"
    assert [s.text for s in doc.sections] == [
        "title: T",
        "items[0].name: a\nitems[0].tags[0]: x\nitems[1].name: b\nitems[1].ok: true",
    ]


def test_jsonl_one_section_per_record() -> None:
    doc = parse_document(b'{"a": 1}\n\n{"a": {"b": "two"}}\n', "rows.jsonl", limits=LIMITS)
    assert doc.format == "jsonl"
    assert [s.text for s in doc.sections] == ["a: 1", "a.b: two"]
