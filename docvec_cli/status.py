"""`docvec status`: a fleet snapshot (`common.fleet.fleet_snapshot` or `GET /api/v1/fleet`) as tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATE_STYLE = {"alive": "green", "late": "yellow", "dead": "red"}
TASK_STATES = ("queued", "running", "done", "failed", "cancelled")


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def print_status(snapshot: dict[str, Any], console: Console) -> None:
    """Workers, streams, tasks, throughput and warnings of one snapshot."""
    states = snapshot.get("worker_states") or {}
    console.print("workers: " + "  ".join(
        f"[{STATE_STYLE[s]}]{s} {int(states.get(s, 0))}[/{STATE_STYLE[s]}]" for s in ("alive", "late", "dead")
    ))
    workers = snapshot.get("workers") or []
    if workers:
        table = Table("worker", "state", "heartbeat", "tasks", "done", "failed", "embed/s", box=None)
        for w in workers:
            style = STATE_STYLE.get(str(w.get("state")), "")
            rate = w.get("embed_chunks_per_s")
            table.add_row(
                str(w.get("consumer")), f"[{style}]{w.get('state')}[/{style}]" if style else str(w.get("state")),
                _age(w.get("heartbeat_age_s")) + " ago", f"{len(w.get('in_flight') or [])}/{w.get('slots') or '?'}",
                str(w.get("done", 0)), str(w.get("failed", 0)), f"{rate:.1f}" if isinstance(rate, int | float) else "-",
            )
        console.print(table)

    streams = Table("stream", "length", "pending", "lag", "oldest pending", box=None)
    for s in snapshot.get("streams") or []:
        streams.add_row(str(s.get("name")), str(s.get("length", 0)), str(s.get("pending", 0)), str(s.get("lag", 0)),
                        _age(s.get("oldest_pending_age_s")))
    dead = snapshot.get("dead_letter") or {}
    if dead:
        streams.add_row(str(dead.get("name")), str(dead.get("length", 0)), "", "", "")
    console.print(streams)

    tasks = snapshot.get("tasks") or {}
    console.print("tasks: " + "  ".join(f"{state} {int(tasks.get(state, 0))}" for state in TASK_STATES))
    garbage = snapshot.get("garbage") or {}
    if garbage:
        oldest = f" (oldest {_age(garbage.get('oldest_age_s'))})" if garbage.get("count") else ""
        console.print(f"garbage not yet removed: {int(garbage.get('count') or 0)}{oldest}")
    for name, outage in (snapshot.get("dependencies") or {}).items():
        console.print(f"[red]{name} down[/red] for {_age(outage.get('down_for_s'))}, seen by "
                      f"{len(outage.get('workers') or [])} worker(s): {escape(str(outage.get('error') or ''))}")
    throughput = snapshot.get("throughput") or {}
    if throughput:
        console.print(f"last hour: {throughput.get('done_per_min', 0)} done/min, "
                      f"{throughput.get('failed_per_min', 0)} failed/min")
    for warning in snapshot.get("warnings") or []:
        colour = "red" if warning.get("level") == "critical" else "yellow"
        console.print(f"[{colour}]{warning.get('level')}:[/{colour}] {warning.get('message')}")
