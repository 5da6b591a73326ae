"""Result records returned to callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Hit:
    """One search hit. `distance` is a similarity for COSINE/IP (higher is better) and the squared
    distance for L2 (lower is better); `entity` holds the requested output fields."""

    id: Any
    distance: float
    entity: dict[str, Any] = field(default_factory=dict)
