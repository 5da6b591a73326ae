"""JSON and JSON Lines: values flattened to "key.path: value" lines.

A JSON document's top-level entries (keys of an object, items of an array) are one section each; a
JSONL document has one section per record. Flattening uses an explicit stack, so nesting depth is
bounded only by what `json` itself accepts (a `RecursionError` there becomes `CorruptDocument`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from common.errors import CorruptDocument
from common.parsing.base import ParsedDocument
from common.parsing.builder import DocumentBuilder
from common.parsing.sniff import JSON, JSONL, decode_text


class JsonParser:
    """Parser for JSON documents, and for JSONL when `lines` is set."""

    def __init__(self, *, lines: bool = False) -> None:
        self.format = JSONL if lines else JSON

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        return self.parse_text(decode_text(data, filename), filename)

    def parse_text(self, text: str, filename: str) -> ParsedDocument:
        builder = DocumentBuilder()
        if self.format == JSONL:
            for number, line in enumerate(text.split("\n"), start=1):
                if line.strip():
                    builder.section("\n".join(flatten(_load(line, filename, line_number=number))))
        else:
            value = _load(text, filename)
            if isinstance(value, dict):
                for key, item in value.items():
                    builder.section("\n".join(flatten(item, str(key))))
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    builder.section("\n".join(flatten(item, f"[{index}]")))
            else:
                builder.section("\n".join(flatten(value)))
        return builder.build(self.format)


def _load(text: str, filename: str, line_number: int | None = None) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = line_number if line_number is not None else exc.lineno
        raise CorruptDocument(
            f'file "{filename}" is not valid JSON{"L" if line_number else ""}: {exc.msg} at line {line} '
            f"column {exc.colno}; fix it (or export it again) and upload it again",
            code="invalid_json",
        ) from exc
    except RecursionError as exc:
        raise CorruptDocument(
            f'file "{filename}": JSON is nested too deeply to parse; flatten it and upload it again',
            code="invalid_json",
        ) from exc


def flatten(value: object, path: str = "") -> Iterator[str]:
    """ "path: value" for each scalar in `value`, in document order; empty containers are skipped."""
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        prefix, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((_join(prefix, str(key)), item) for key, item in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((f"{prefix}[{index}]", item) for index, item in reversed(list(enumerate(node))))
        elif node is not None and str(node).strip():
            text = " ".join(str(node).split()) if isinstance(node, str) else json.dumps(node)
            yield f"{prefix}: {text}" if prefix else text


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
