"""Filters built in code: `Where`, typed against the collection's schema where it runs, never re-parsed.

    Where.eq("document_id", doc_id) & Where.eq("parse_version", 3)
    Where.one_of("document_id", ids)

Every client takes a filter as Milvus text or as a `Where`. The embedded engine resolves a `Where`
straight to the evaluator's expression tree (`Where.compile`); remote clients send `Where.text()`,
the same condition in Milvus's syntax, which the other side's parser reads back to the same tree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from vectordb.errors import FilterError
from vectordb.expr import And, Compare, Expr, InList, compile_filter, literal_problem, resolve_field
from vectordb.expr import Literal as Value
from vectordb.schema import CollectionSchema

Op = Literal["==", "!=", "in"]
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


@dataclass(frozen=True, slots=True)
class Term:
    field: str
    op: Op
    value: Any  # a scalar; for "in" a tuple of scalars


@dataclass(frozen=True, slots=True)
class Where:
    """A conjunction of field conditions (`==`, `!=`, `in`); `&` joins two."""

    terms: tuple[Term, ...] = ()

    @classmethod
    def eq(cls, field: str, value: Any) -> Where:
        return cls((Term(field, "==", _scalar(field, value)),))

    @classmethod
    def ne(cls, field: str, value: Any) -> Where:
        return cls((Term(field, "!=", _scalar(field, value)),))

    @classmethod
    def one_of(cls, field: str, values: Iterable[Any]) -> Where:
        return cls((Term(field, "in", tuple(_scalar(field, v) for v in values)),))

    def __and__(self, other: Where) -> Where:
        if not isinstance(other, Where):
            return NotImplemented
        return Where(self.terms + other.terms)

    def compile(self, schema: CollectionSchema) -> Expr | None:
        """The expression tree for `schema` (None: no terms, no filter); FilterError as for text."""
        parts: list[Expr] = []
        for term in self.terms:
            ref = resolve_field(schema, term.field, (), 0)
            if isinstance(ref, str):
                raise FilterError(ref, expression=self.text())
            values = term.value if term.op == "in" else (term.value,)
            for value in values:
                problem = literal_problem(ref, value)
                if problem:
                    raise FilterError(problem, expression=self.text())
            if term.op == "in":
                parts.append(InList(ref, term.value, False))
            else:
                parts.append(Compare(term.op, ref, Value(term.value, 0)))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def text(self) -> str:
        """The same filter in Milvus's syntax."""
        out = []
        for term in self.terms:
            if term.op == "in":
                out.append(f"{term.field} in [{', '.join(_render(v) for v in term.value)}]")
            else:
                out.append(f"{term.field} {term.op} {_render(term.value)}")
        return " and ".join(out)


def compile_any(filter: str | Where | None, schema: CollectionSchema) -> Expr | None:
    """A filter given as text or as a `Where`, type-checked against `schema` (None: no filter)."""
    if isinstance(filter, Where):
        return filter.compile(schema)
    return compile_filter(filter or "", schema)


def filter_text(filter: str | Where | None) -> str | None:
    """The filter as Milvus text, for a remote store."""
    return filter.text() if isinstance(filter, Where) else filter


def _scalar(field: str, value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"field {field!r}: cannot filter on {value!r}")
    if not isinstance(value, bool | int | float | str):
        raise FilterError(f"field {field!r}: a filter value must be a number, a string or a bool, got {value!r}")
    return value


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    return repr(value)
