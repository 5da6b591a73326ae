"""Parameterised statements rendered once by the database's own dialect (the worker's hot writes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import peewee


class Statement:
    """One parameterised statement, rendered once by the database's own dialect from a peewee query.

    The query names its arguments with `arg(name)`; constants it holds stay as they are. The hot worker
    writes run these per row: rendering a peewee query costs far more than executing it.
    """

    def __init__(self, query: Any) -> None:
        self.sql, params = query.sql()
        self._spec = [
            (p[len(_ARG):], None) if isinstance(p, str) and p.startswith(_ARG) else (None, p) for p in params
        ]

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        return [const if name is None else values[name] for name, const in self._spec]


_ARG = "\x00arg:"


def arg(name: str) -> peewee.Value:
    """A named placeholder for `Statement` (no field conversion: the value is bound as it is)."""
    return peewee.Value(_ARG + name, converter=False)


