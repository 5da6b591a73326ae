"""Progress bars for tasks, fed by any async status source (the DB in-process, or the HTTP API)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

TERMINAL = frozenset({"done", "failed", "cancelled"})
POLL_INTERVAL_S = 0.3


@dataclass(frozen=True, slots=True)
class TaskView:
    task_id: str
    status: str
    progress: float
    stage: str | None
    error: str | None
    chunks_embedded: int = 0
    chunks_reused: int = 0


async def watch_tasks(labels: dict[str, str], fetch: Callable[[list[str]], Awaitable[dict[str, TaskView]]], *,
                      console: Console, show_bars: bool) -> dict[str, TaskView]:
    """Poll every task until all are terminal (`fetch` reads the unfinished ones together: one query or a
    few requests per round, not one per task); draw one bar per document when `show_bars`."""
    final: dict[str, TaskView] = {}
    with Progress(
        TextColumn("{task.description}", justify="left"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
        console=console, disable=not show_bars, transient=False,
    ) as bars:
        bar_ids = {tid: bars.add_task(label[:40], total=1.0, state="queued") for tid, label in labels.items()}
        while len(final) < len(labels):
            pending = [task_id for task_id in labels if task_id not in final]
            views = await fetch(pending)
            for task_id in pending:
                # gone: its document was deleted meanwhile (by another client), so it will never finish
                view = views.get(task_id) or TaskView(task_id, "cancelled", 0.0, None, "its document was deleted")
                state = view.status if view.status != "running" else (view.stage or "running")
                bars.update(bar_ids[task_id], completed=view.progress, state=state)
                if view.status in TERMINAL:
                    final[task_id] = view
            if len(final) < len(labels):
                await asyncio.sleep(POLL_INTERVAL_S)
    return final
