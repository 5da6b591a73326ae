"""Evaluating a compiled filter (`vectordb.expr`) over rows, within a budget of work per request.

Every node's cost is linear in the rows it reads (`like` included: `vectordb.like` never backtracks), so a
budget of steps bounds the time: one request's filter costs at most `MAX_FILTER_WORK` steps over all the
rows it reads (`FilterBudget`, charged for every row before any is read, then for what the data adds), and
past it the request is a FilterError: a filter of 100,000 conditions over a million rows is refused at once
instead of holding a worker thread for minutes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from vectordb.errors import FilterError
from vectordb.expr import (
    ARITH,
    And,
    Arith,
    Compare,
    Contains,
    Expr,
    InList,
    IsNull,
    Length,
    Like,
    Literal,
    Not,
    Operand,
    Or,
    RowOperand,
    Truthy,
    kind_of,
    kind_of_value,
)

# Steps of filter evaluation per request (the cost model is beside `FilterBudget`): at most ~4.5 s of one
# core at the slowest kind of step measured (~150 ns); a condition on a JSON path over a million rows is 4M.
MAX_FILTER_WORK = 30_000_000

class ColumnSource(Protocol):
    """Rows to evaluate over: `n` rows, each column as a numpy array (object dtype for strings/JSON)."""

    @property
    def n(self) -> int: ...

    def column(self, name: str) -> np.ndarray: ...


_MISSING = object()
_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class FilterBudget:
    """The evaluation work one request's filter may do, in steps; past the limit the request fails with a
    FilterError. A request is charged what all its rows will cost before any is read (`charge_rows`:
    rows x `steps_per_row`), so a filter that is too costly is refused at once, then what only the data
    tells (text lengths for `like`, array lengths for `array_contains*`) as each segment is read."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = MAX_FILTER_WORK) -> None:
        self.limit = limit
        self.used = 0

    @classmethod
    def for_rows(cls, expr: Expr | None, rows: int) -> FilterBudget:
        """A request's budget, charged for evaluating `expr` (None: no filter, nothing) over `rows` rows."""
        budget = cls()
        budget.charge_rows(expr, rows)
        return budget

    def charge(self, steps: int) -> None:
        self.used += steps
        if self.used > self.limit:
            raise FilterError(
                f"the filter needs more than {self.limit:,} steps of work over this collection's rows (the limit "
                "per request; a step is about one condition on one row): narrow it, e.g. fewer conditions, "
                "'in [...]' for many values, a typed field instead of a JSON path, or a partition"
            )

    def charge_rows(self, expr: Expr | None, rows: int) -> None:
        if expr is not None:
            self.charge(math.ceil(steps_per_row(expr) * rows))


# The cost model, calibrated on a segment's cached columns (2-core x86; a step is ~50-150 ns): a row through
# a Python generator is a step, a JSON value read, compared or looked up two, numpy does 16 rows a step.
_VECTOR = 1 / 16
_JSON_STEP = 2


def steps_per_row(expr: Expr) -> float:
    """What evaluating `expr` costs per row, before what depends on the data (see `FilterBudget`)."""
    if isinstance(expr, And | Or):
        return sum(steps_per_row(p) for p in expr.parts) + _VECTOR * (len(expr.parts) - 1)
    if isinstance(expr, Not):
        return steps_per_row(expr.part) + _VECTOR
    if isinstance(expr, Compare):
        typed = all(isinstance(x, Literal) or x.typed for x in (expr.left, expr.right))
        return _operand_steps(expr.left) + _operand_steps(expr.right) + (_VECTOR if typed else _JSON_STEP)
    if isinstance(expr, InList):
        return _operand_steps(expr.operand) + (_VECTOR if kind_of(expr.operand) == "number" else _JSON_STEP)
    if isinstance(expr, Like):
        return _operand_steps(expr.operand) + 1 + len(expr.pattern.pieces)
    if isinstance(expr, Contains | IsNull | Truthy):
        return _operand_steps(expr.operand) + 1
    raise TypeError(f"unknown expression node {expr!r}")


def _operand_steps(op: Operand) -> float:
    if isinstance(op, Literal):
        return _VECTOR
    if isinstance(op, Length):
        return _operand_steps(op.ref) + 1
    if isinstance(op, Arith):
        return _operand_steps(op.left) + _operand_steps(op.right) + (_VECTOR if op.typed else _JSON_STEP)
    return _JSON_STEP * len(op.path)


def evaluate(expr: Expr, src: ColumnSource, budget: FilterBudget | None = None) -> np.ndarray:
    """Boolean mask of the rows of `src` that satisfy `expr`. `budget`: the request's, charged for these
    rows already (`FilterBudget.for_rows` over all the sources it reads); None: one for `src` alone."""
    return _Evaluator(src, budget or FilterBudget.for_rows(expr, src.n)).mask(expr)


class _Evaluator:
    """Evaluates nodes over one source's rows (what they cost per row is charged already), charging what
    the data adds."""

    def __init__(self, src: ColumnSource, budget: FilterBudget) -> None:
        self.src = src
        self.n = src.n
        self.budget = budget

    def mask(self, expr: Expr) -> np.ndarray:
        if isinstance(expr, And | Or):
            combine = np.logical_and if isinstance(expr, And) else np.logical_or
            mask = self.mask(expr.parts[0])
            for p in expr.parts[1:]:
                combine(mask, self.mask(p), out=mask)
            return mask
        if isinstance(expr, Not):
            return ~self.mask(expr.part)
        if isinstance(expr, Compare):
            return self.compare(expr)
        if isinstance(expr, InList):
            return self.in_list(expr)
        if isinstance(expr, Like):
            return self.like(expr)
        if isinstance(expr, Contains):
            return self.contains(expr)
        if isinstance(expr, IsNull):
            null = np.fromiter((v is None or v is _MISSING for v in self.values(expr.operand)), bool, self.n)
            return ~null if expr.negate else null
        if isinstance(expr, Truthy):
            vals = self.values(expr.operand)
            if isinstance(vals, np.ndarray) and vals.dtype == bool:
                return vals.copy()
            return np.fromiter((v is True for v in vals), bool, self.n)
        raise TypeError(f"unknown expression node {expr!r}")

    def values(self, op: Operand) -> Any:
        """A numpy array for typed columns (and arithmetic over them), a list per row for JSON paths, ARRAY
        lengths and other arithmetic, the plain value for literals."""
        if isinstance(op, Literal):
            return np.full(self.n, op.value, dtype=object if not isinstance(op.value, bool) else bool)
        if isinstance(op, Length):
            return [len(v) if isinstance(v, list) else _MISSING for v in self.values(op.ref)]
        if isinstance(op, Arith):
            return self.arith(op)
        col = self.src.column(op.column)
        if not op.path:
            return col
        return [_json_get(v, op.path) for v in col]

    def arith(self, op: Arith) -> Any:
        fn = ARITH[op.op]
        sides = [x.value if isinstance(x, Literal) else self.values(x) for x in (op.left, op.right)]
        if op.typed:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                if op.op in ("+", "-", "*"):
                    return fn(*sides)  # integers stay exact (int64 columns; an overflow wraps, as in Milvus)
                out = fn(*(np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else v for v in sides))
            return np.where(np.isfinite(out), out, np.nan)  # a division by zero matches no comparison
        left, right = (v if isinstance(x, RowOperand) else [v] * self.n
                       for x, v in zip((op.left, op.right), sides, strict=True))
        return [_arith_one(fn, a, b) for a, b in zip(left, right, strict=True)]

    def compare(self, expr: Compare) -> np.ndarray:
        fn = _CMP[expr.op]
        left, right = expr.left, expr.right
        if isinstance(left, Literal) and isinstance(right, Literal):
            ok = _same_kind(left.value, right.value) and bool(fn(left.value, right.value))
            return np.full(self.n, ok)
        typed = all(isinstance(x, Literal) or x.typed for x in (left, right))
        lv = left.value if isinstance(left, Literal) else self.values(left)
        rv = right.value if isinstance(right, Literal) else self.values(right)
        if typed:
            # Type-checked at parse time, so numpy's elementwise comparison is exact here; a string literal
            # goes in as an object scalar (numpy would turn a bare str into a fixed-width string, which
            # drops trailing NUL characters: "a\x00" would match "a").
            return np.asarray(fn(_object_scalar(lv), _object_scalar(rv)), dtype=bool)
        li = lv if isinstance(left, RowOperand) else [lv] * self.n
        ri = rv if isinstance(right, RowOperand) else [rv] * self.n
        return np.fromiter((_same_kind(a, b) and bool(fn(a, b)) for a, b in zip(li, ri, strict=True)), bool, self.n)

    def in_list(self, expr: InList) -> np.ndarray:
        op = expr.operand
        if isinstance(op, Literal):
            hit = any(_same_kind(op.value, v) and op.value == v for v in expr.values)
            return np.full(self.n, hit != expr.negate)
        vals = self.values(op)
        if op.typed and isinstance(vals, np.ndarray) and vals.dtype != object:
            self.budget.charge(math.ceil(len(expr.values) * _VECTOR))  # the list is sorted per source
            mask = np.isin(vals, np.asarray(expr.values)) if expr.values else np.zeros(self.n, bool)
        else:
            wanted = _keys(expr.values)
            mask = np.fromiter((_key(v) in wanted for v in vals), bool, self.n)
        return ~mask if expr.negate else mask

    def like(self, expr: Like) -> np.ndarray:
        texts = [v if isinstance(v, str) else None for v in self.values(expr.operand)]
        self.budget.charge(expr.pattern.text_work(sum(len(t) for t in texts if t is not None)))
        matches = expr.pattern.matches
        return np.fromiter((t is not None and matches(t) for t in texts), bool, self.n)

    def contains(self, expr: Contains) -> np.ndarray:
        """`array_contains*`: the literals looked up in a set of each row's elements (by kind and value, as
        `==` compares them), so a long list costs a row its own length, not the list's."""
        lists = [v if isinstance(v, list) else None for v in self.values(expr.operand)]
        self.budget.charge(_JSON_STEP * sum(len(v) for v in lists if v is not None))
        wanted = _keys(expr.values)

        def match(value: list[Any] | None) -> bool:
            if value is None:
                return False
            if expr.mode == "all":
                have = {_key(item) for item in value}
                return len(wanted) <= len(have) and wanted <= have
            return any(_key(item) in wanted for item in value)

        return np.fromiter((match(v) for v in lists), bool, self.n)


def _key(value: Any) -> tuple[str, Any] | None:
    """`value` as a set key that equals another exactly when `_same_kind(a, b) and a == b` (None: a list,
    a dict or a null, which equal no literal)."""
    kind = kind_of_value(value)
    return None if kind == "other" else (kind, value)


def _keys(values: Sequence[Any]) -> set[tuple[str, Any] | None]:
    return {_key(v) for v in values} - {None}


def _json_get(value: Any, path: Sequence[str | int]) -> Any:
    for key in path:
        if isinstance(key, str) and isinstance(value, dict):
            value = value.get(key, _MISSING)
        elif isinstance(key, int) and isinstance(value, list) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _arith_one(fn: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if kind_of_value(a) != "number" or kind_of_value(b) != "number":
        return _MISSING
    try:
        return fn(a, b)
    except (ZeroDivisionError, OverflowError):  # OverflowError: a JSON integer too large for a float
        return _MISSING


def _same_kind(a: Any, b: Any) -> bool:
    ka, kb = kind_of_value(a), kind_of_value(b)
    return ka == kb and ka != "other"


def _object_scalar(value: Any) -> Any:
    return np.array(value, dtype=object) if isinstance(value, str) else value
