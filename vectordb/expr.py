"""Milvus boolean filter expressions: tokenizer, recursive-descent parser, vectorised evaluator.

Grammar (keywords are case-insensitive):

    expr     := and_expr (("or" | "||") and_expr)*
    and_expr := not_expr (("and" | "&&") not_expr)*
    not_expr := ("not" | "!") not_expr | primary
    primary  := "(" expr ")"
              | contains "(" field "," (literal | list) ")"  # array_contains(tags, "a")
              | operand cmp operand [cmp operand]         # chained range: 1 < a < 5
              | operand ["not"] "in" list
              | operand "like" string                      # % any run, _ one char
              | field "is" ["not"] "null"
              | operand                                    # a BOOL field or a JSON value
    operand  := term (("+" | "-") term)*                   # arithmetic: 10 + 20 <= a * 2
    term     := unary (("*" | "/" | "%") unary)*
    unary    := ("-" | "+") unary | atom
    atom     := field ("[" (string | int) "]")* | literal | "array_length" "(" field ")"
    list     := "[" literal, ... "]"
    literal  := int | float | string | true | false        # strings in "..." or '...'
    contains := array_contains | array_contains_all | array_contains_any   (json_contains* alike)

A name that is not in the schema refers to a dynamic field when the schema enables them. Function
names are case-insensitive. Arithmetic on literals alone is folded at parse time; on a field it is
evaluated per row (a JSON value that is not a number matches nothing, as Milvus treats it).

Limits, each a FilterError that names it, like any other bad filter:
- a filter is at most `MAX_FILTER_CHARS` characters;
- every construct the parser or the evaluator recurses on (parentheses, `not`, unary signs,
  `array_length(...)`, and arithmetic on fields, whose operations nest as a tree) is at most
  `MAX_FILTER_DEPTH` levels deep, so no filter can exhaust the stack;
- integer literals, and arithmetic folded on them, stay within INT64 (as in Milvus);
- evaluating one request's filter over its rows has a budget (`vectordb.evaluation`, where the compiled
  expression is evaluated).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from vectordb.errors import FilterError
from vectordb.like import LikePattern
from vectordb.schema import DYNAMIC_FIELD, CollectionSchema, DataType

MAX_FILTER_CHARS = 1 << 20  # a few thousand `in` list entries fit many times over
MAX_FILTER_DEPTH = 64  # nested ( ), `not`, signs, arithmetic; generated filters are flat (`a or b`, `x in [...]`)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # IDENT INT FLOAT STRING CMP AND OR NOT IN LIKE TRUE FALSE ( ) [ ] , - + * / % EOF
    value: Any
    pos: int


_KEYWORDS = {"and": "AND", "or": "OR", "not": "NOT", "in": "IN", "like": "LIKE", "true": "TRUE", "false": "FALSE"}
_NUMBER_RE = re.compile(r"(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", re.ASCII)
_DIGITS = frozenset("0123456789")
_IDENT_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        two = text[i : i + 2]
        if two in ("==", "!=", "<=", ">="):
            tokens.append(Token("CMP", two, i))
            i += 2
        elif two == "&&":
            tokens.append(Token("AND", two, i))
            i += 2
        elif two == "||":
            tokens.append(Token("OR", two, i))
            i += 2
        elif c in "<>":
            tokens.append(Token("CMP", c, i))
            i += 1
        elif c == "!":
            tokens.append(Token("NOT", c, i))
            i += 1
        elif c in "()[],-+*/%":
            tokens.append(Token(c, c, i))
            i += 1
        elif c in "\"'":
            value, i = _read_string(text, i)
            tokens.append(value)
        elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            m = _NUMBER_RE.match(text, i)
            assert m is not None
            raw = m.group(0)
            if m.group(2) or "." in raw:
                tokens.append(Token("FLOAT", float(raw), i))
            elif len(digits := raw.lstrip("0")) > 19 or int(digits or "0") > -INT64_MIN:  # -INT64_MIN: -2**63's size
                raise FilterError(f"integer {raw[:30]}{'...' if len(raw) > 30 else ''} is out of the INT64 range",
                                  position=i, expression=text)
            else:
                tokens.append(Token("INT", int(digits or "0"), i))
            i = m.end()
        elif _IDENT_RE.match(text, i):
            m = _IDENT_RE.match(text, i)
            assert m is not None
            word = m.group(0)
            kind = _KEYWORDS.get(word.lower(), "IDENT")
            tokens.append(Token(kind, word, i))
            i = m.end()
        else:
            raise FilterError(f"unexpected character {c!r}", position=i, expression=text)
    tokens.append(Token("EOF", None, n))
    return tokens


def _read_string(text: str, start: int) -> tuple[Token, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
            i += 2
        elif c == quote:
            return Token("STRING", "".join(out), start), i + 1
        else:
            out.append(c)
            i += 1
    raise FilterError("unterminated string literal", position=start, expression=text)


# ------------------------------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class FieldRef:
    column: str  # schema field name or DYNAMIC_FIELD
    path: tuple[str | int, ...]
    dtype: DataType  # of the column
    pos: int
    nullable: bool = False

    @property
    def scalar(self) -> bool:
        """A scalar column (not a JSON value or an ARRAY): literals compared with it must be of its kind."""
        return not self.path and self.dtype not in (DataType.JSON, DataType.ARRAY)

    @property
    def typed(self) -> bool:
        """A scalar column without nulls: numpy evaluates it over the whole column (a nullable one is
        compared row by row, and a null matches no comparison)."""
        return self.scalar and not self.nullable


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any
    pos: int


@dataclass(frozen=True, slots=True)
class Arith:
    """`left op right` (+ - * / %) with at least one side read from the rows."""

    op: str
    left: Operand
    right: Operand
    pos: int
    depth: int  # operations on the longest path down to a field or literal (bounded by MAX_FILTER_DEPTH)

    @property
    def typed(self) -> bool:
        """Both sides plain numeric columns or literals: numpy evaluates it over whole columns."""
        return all(isinstance(x, Literal) or (x.typed and kind_of(x) == "number") for x in (self.left, self.right))


@dataclass(frozen=True, slots=True)
class Length:
    """`array_length(field)`: the element count of an ARRAY field or a JSON list."""

    ref: FieldRef
    pos: int

    @property
    def typed(self) -> bool:
        return False


Operand = FieldRef | Literal | Arith | Length
RowOperand = (FieldRef, Arith, Length)  # what isinstance checks for "read from the rows"


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class InList:
    operand: Operand
    values: tuple[Any, ...]
    negate: bool


@dataclass(frozen=True, slots=True)
class Like:
    operand: Operand
    pattern: LikePattern


@dataclass(frozen=True, slots=True)
class Truthy:
    operand: Operand


@dataclass(frozen=True, slots=True)
class IsNull:
    """`field is null` / `field is not null` (a JSON path that is missing counts as null)."""

    operand: FieldRef
    negate: bool


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Expr


@dataclass(frozen=True, slots=True)
class Contains:
    """`array_contains(f, v)` (mode "one"), `array_contains_all(f, [..])` ("all"), `..._any` ("any")."""

    operand: FieldRef
    values: tuple[Any, ...]
    mode: str


Expr = Compare | InList | Like | Truthy | IsNull | Contains | And | Or | Not

_CONTAINS = {
    **dict.fromkeys(("array_contains", "json_contains"), "one"),
    **dict.fromkeys(("array_contains_all", "json_contains_all"), "all"),
    **dict.fromkeys(("array_contains_any", "json_contains_any"), "any"),
}
ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod,
}

# ---------------------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, schema: CollectionSchema) -> None:
        self.text = text
        self.schema = schema
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @contextmanager
    def nest(self, t: Token) -> Iterator[None]:
        """One more level of a construct the parser recurses on: `(`, `not`, a sign, `array_length(`."""
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            self.too_deep(t.pos)
        yield
        self.depth -= 1

    def too_deep(self, pos: int) -> NoReturn:
        self.fail(f"the filter nests parentheses, 'not', signs or arithmetic more than {MAX_FILTER_DEPTH} levels "
                  "deep (the limit); flatten it, e.g. with 'or', 'and' or 'in [...]'", pos=pos)

    # token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def take(self, kind: str) -> Token:
        t = self.tok
        if t.kind != kind:
            self.fail(f"expected {_describe_kind(kind)}, found {_describe(t)}", t)
        self.i += 1
        return t

    def fail(self, message: str, t: Token | None = None, pos: int | None = None) -> NoReturn:
        raise FilterError(message, position=pos if pos is not None else (t or self.tok).pos, expression=self.text)

    # grammar
    def parse(self) -> Expr:
        e = self.parse_or()
        if self.tok.kind != "EOF":
            self.fail(f"unexpected {_describe(self.tok)}")
        return e

    def parse_or(self) -> Expr:
        parts = [self.parse_and()]
        while self.tok.kind == "OR":
            self.i += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self) -> Expr:
        parts = [self.parse_not()]
        while self.tok.kind == "AND":
            self.i += 1
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_not(self) -> Expr:
        if self.tok.kind == "NOT":
            with self.nest(self.tok):
                self.i += 1
                return Not(self.parse_not())
        return self.parse_primary()

    def parse_primary(self) -> Expr:
        if self.tok.kind == "(":
            with self.nest(self.tok):
                self.i += 1
                e = self.parse_or()
                self.take(")")
                return e
        if self.tok.kind == "IDENT" and self.tok.value.lower() in _CONTAINS and self.peek().kind == "(":
            return self.parse_contains()
        left = self.parse_operand()
        t = self.tok
        if t.kind == "IDENT" and t.value.lower() == "is":
            return self.finish_is_null(left)
        if t.kind == "NOT" and self.peek().kind == "IN":
            self.i += 2
            return self.finish_in(left, negate=True)
        if t.kind == "IN":
            self.i += 1
            return self.finish_in(left, negate=False)
        if t.kind == "LIKE":
            self.i += 1
            pat = self.take("STRING")
            self._need_string_operand(left, "like", t)
            return Like(left, LikePattern.compile(pat.value))
        if t.kind == "CMP":
            self.i += 1
            right = self.parse_operand()
            first = self.make_compare(t, left, right)
            if self.tok.kind == "CMP":
                t2 = self.take("CMP")
                third = self.parse_operand()
                return And((first, self.make_compare(t2, right, third)))
            return first
        if isinstance(left, FieldRef):
            if left.scalar and left.dtype is not DataType.BOOL:
                self.fail(f"field {_ref_name(left)!r} is {left.dtype.value}, not a boolean condition", pos=left.pos)
            return Truthy(left)
        if isinstance(left, Literal) and isinstance(left.value, bool):
            return Truthy(left)
        return self.fail(f"expected a comparison, found {_describe(t)}", t)

    def finish_is_null(self, left: Operand) -> Expr:
        t = self.take("IDENT")  # "is"
        negate = self.tok.kind == "NOT"
        if negate:
            self.i += 1
        word = self.tok
        if word.kind != "IDENT" or word.value.lower() != "null":
            self.fail(f"expected 'null' after 'is{' not' if negate else ''}', found {_describe(word)}", word)
        self.i += 1
        if not isinstance(left, FieldRef):
            self.fail("'is null' takes a field on its left", t)
        return IsNull(left, negate)

    def parse_contains(self) -> Expr:
        name = self.take("IDENT")
        mode = _CONTAINS[name.value.lower()]
        self.take("(")
        ref = self.parse_operand()
        if not isinstance(ref, FieldRef) or (ref.scalar and ref.dtype is not DataType.ARRAY):
            self.fail(f"{name.value}() takes an ARRAY or JSON field first", name)
        self.take(",")
        if mode == "one":
            value = self.parse_operand()
            if not isinstance(value, Literal):
                self.fail(f"{name.value}() takes a literal to look for", name)
            values: tuple[Any, ...] = (value.value,)
        else:
            values = self.parse_list()
        self.take(")")
        element = self.schema.field(ref.column)
        if element is not None and element.element_type is not None and not ref.path:
            typed = FieldRef(ref.column, (), element.element_type, ref.pos)
            for v in values:
                self._check_literal_type(typed, v, name)
        return Contains(ref, values, mode)

    def parse_list(self) -> tuple[Any, ...]:
        self.take("[")
        values: list[Any] = []
        while self.tok.kind != "]":
            lit = self.parse_operand()
            if isinstance(lit, Literal):
                values.append(lit.value)
            else:
                self.fail("a list may hold only literals", pos=lit.pos)
            if self.tok.kind == ",":
                self.i += 1
            elif self.tok.kind != "]":
                self.fail(f"expected ',' or ']' in list, found {_describe(self.tok)}")
        self.i += 1
        return tuple(values)

    def finish_in(self, left: Operand, *, negate: bool) -> Expr:
        start = self.tok
        values = self.parse_list()
        if isinstance(left, FieldRef):
            for v in values:
                self._check_literal_type(left, v, start)
        return InList(left, values, negate)

    def parse_operand(self) -> Operand:
        left = self.parse_term()
        while self.tok.kind in ("+", "-"):
            t = self.take(self.tok.kind)
            left = self.arith(t, left, self.parse_term())
        return left

    def parse_term(self) -> Operand:
        left = self.parse_unary()
        while self.tok.kind in ("*", "/", "%"):
            t = self.take(self.tok.kind)
            left = self.arith(t, left, self.parse_unary())
        return left

    def parse_unary(self) -> Operand:
        t = self.tok
        if t.kind in ("-", "+"):
            with self.nest(t):
                self.i += 1
                return self.arith(t, Literal(0, t.pos), self.parse_unary())  # -x is 0 - x, folded for a literal
        return self.parse_atom()

    def arith(self, t: Token, left: Operand, right: Operand) -> Operand:
        """`left op right`, folded when both are literals; each side must be a number."""
        for side in (left, right):
            kind = kind_of(side)
            if kind not in ("number", "json"):
                self.fail(f"operator {t.value} needs numbers, got {_operand_text(side)}", pos=side.pos)
        if isinstance(left, Literal) and isinstance(right, Literal):
            if t.value in ("/", "%") and right.value == 0:
                self.fail(f"division by zero in {t.value}", t)
            value = ARITH[t.value](left.value, right.value)
            if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                self.fail(f"{_operand_text(left)} {t.value} {_operand_text(right)} is out of the INT64 range", t)
            return Literal(value, left.pos)
        depth = 1 + max(x.depth if isinstance(x, Arith) else 0 for x in (left, right))
        if depth > MAX_FILTER_DEPTH:
            self.too_deep(t.pos)
        return Arith(t.value, left, right, t.pos, depth)

    def parse_atom(self) -> Operand:
        t = self.tok
        if t.kind == "IDENT" and t.value.lower() == "array_length" and self.peek().kind == "(":
            with self.nest(t):
                self.i += 2
                ref = self.parse_atom()
            if not isinstance(ref, FieldRef) or (ref.scalar and ref.dtype is not DataType.ARRAY):
                self.fail("array_length() takes an ARRAY or JSON field", t)
            self.take(")")
            return Length(ref, t.pos)
        if t.kind in ("INT", "FLOAT", "STRING"):
            self.i += 1
            return Literal(t.value, t.pos)
        if t.kind in ("TRUE", "FALSE"):
            self.i += 1
            return Literal(t.kind == "TRUE", t.pos)
        if t.kind == "IDENT":
            self.i += 1
            path: list[str | int] = []
            while self.tok.kind == "[":
                self.i += 1
                key = self.tok
                if key.kind not in ("STRING", "INT"):
                    self.fail("expected a string or integer key inside [ ]", key)
                self.i += 1
                self.take("]")
                path.append(key.value)
            return self.resolve(t, tuple(path))
        return self.fail(f"expected a field name or a literal, found {_describe(t)}", t)

    def resolve(self, t: Token, path: tuple[str | int, ...]) -> FieldRef:
        ref = resolve_field(self.schema, t.value, path, t.pos)
        return self.fail(ref, t) if isinstance(ref, str) else ref

    def make_compare(self, t: Token, left: Operand, right: Operand) -> Compare:
        for a, b in ((left, right), (right, left)):
            if isinstance(a, FieldRef) and isinstance(b, Literal):
                self._check_literal_type(a, b.value, t)
                if a.scalar and a.dtype is DataType.BOOL and t.value not in ("==", "!="):
                    self.fail(f"operator {t.value} does not apply to BOOL field {a.column!r}", t)
            if isinstance(a, Arith | Length) and isinstance(b, Literal) and kind_of_value(b.value) != "number":
                self.fail(f"cannot compare a number with {b.value!r}", t)
            if isinstance(a, Arith | Length) and isinstance(b, FieldRef) and b.scalar and \
                    _kind_of_dtype(b.dtype) != "number":
                self.fail(f"cannot compare a number with {_operand_text(b)}", t)
        if isinstance(left, FieldRef) and isinstance(right, FieldRef) and left.scalar and right.scalar:
            if _kind_of_dtype(left.dtype) != _kind_of_dtype(right.dtype):
                self.fail(f"cannot compare {left.dtype.value} field with {right.dtype.value} field", t)
        return Compare(t.value, left, right)

    def _check_literal_type(self, ref: FieldRef, value: Any, t: Token) -> None:
        problem = literal_problem(ref, value)
        if problem:
            self.fail(problem, t)

    def _need_string_operand(self, ref: Operand, what: str, t: Token) -> None:
        if not isinstance(ref, FieldRef) or (ref.scalar and ref.dtype is not DataType.VARCHAR):
            self.fail(f"'{what}' needs a VARCHAR or JSON field on its left", t)


def resolve_field(schema: CollectionSchema, name: str, path: tuple[str | int, ...], pos: int) -> FieldRef | str:
    """The filterable field `name` (a dynamic key when the schema allows them), or what is wrong."""
    f = schema.field(name)
    if f is None:
        if schema.enable_dynamic_field:
            return FieldRef(DYNAMIC_FIELD, (name, *path), DataType.JSON, pos)
        known = [x.name for x in schema.fields if x.dtype is not DataType.FLOAT_VECTOR]
        return f"unknown field {name!r} (filterable fields: {known})"
    if f.dtype is DataType.FLOAT_VECTOR:
        return f"cannot filter on vector field {f.name!r}"
    if f.dtype is DataType.ARRAY and path:
        if len(path) != 1 or not isinstance(path[0], int) or isinstance(path[0], bool):
            return f"field {f.name!r} is an ARRAY; index it with one integer, e.g. {f.name}[0]"
        return FieldRef(f.name, path, DataType.JSON, pos)  # an element: compared value by value
    if path and f.dtype is not DataType.JSON:
        return f"field {f.name!r} is {f.dtype.value}; only JSON fields take [key] paths"
    return FieldRef(f.name, path, f.dtype, pos, f.nullable)


def literal_problem(ref: FieldRef, value: Any) -> str | None:
    """Why `value` cannot be compared with the field `ref` (None: it can)."""
    if ref.scalar and kind_of_value(value) != _kind_of_dtype(ref.dtype):
        return f"field {ref.column!r} is {ref.dtype.value}; cannot compare it with {value!r}"
    return None


def _ref_name(ref: FieldRef) -> str:
    return str(ref.path[0]) if ref.column == DYNAMIC_FIELD else ref.column


def kind_of(operand: Operand) -> str:
    """number / string / bool / json (known only per row) of an operand."""
    if isinstance(operand, Literal):
        return kind_of_value(operand.value)
    if isinstance(operand, Arith | Length):
        return "number"
    return _kind_of_dtype(operand.dtype) if operand.typed else "json"


def _operand_text(operand: Operand) -> str:
    if isinstance(operand, Literal):
        return repr(operand.value)
    if isinstance(operand, FieldRef):
        return f"field {_ref_name(operand)!r} ({operand.dtype.value})"
    return "an expression"


def _kind_of_dtype(dt: DataType) -> str:
    return {
        DataType.INT64: "number",
        DataType.FLOAT: "number",
        DataType.DOUBLE: "number",
        DataType.VARCHAR: "string",
        DataType.BOOL: "bool",
    }.get(dt, "json")


def kind_of_value(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "other"


def _describe_kind(kind: str) -> str:
    return {"EOF": "end of expression", "STRING": "a string literal", "IDENT": "a field name"}.get(kind, repr(kind))


def _describe(t: Token) -> str:
    return "end of expression" if t.kind == "EOF" else repr(str(t.value))


def compile_filter(text: str, schema: CollectionSchema) -> Expr | None:
    """Parse and type-check `text` against `schema`. Empty text means "no filter" (None)."""
    if not isinstance(text, str):
        raise FilterError(f"a filter must be a string, got {type(text).__name__}")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(
            f"the filter is {len(text):,} characters long, above the limit of {MAX_FILTER_CHARS:,}; "
            "split the request or filter on fewer values"
        )
    if not text.strip():
        return None
    return _Parser(text, schema).parse()
