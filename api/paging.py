"""Paged lists: a page of items in the body (as a plain list, the shape these routes always had) and the
number of items that match in all in the `X-Total-Count` header."""

from __future__ import annotations

from typing import Any

from fastapi import Response

TOTAL_HEADER = "X-Total-Count"
TOTAL_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"headers": {TOTAL_HEADER: {"description": "how many items match the filters in all, over every page",
                                     "schema": {"type": "integer", "minimum": 0}}}},
}


def set_total(response: Response, total: int) -> None:
    response.headers[TOTAL_HEADER] = str(total)
