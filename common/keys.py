"""Every Redis key, stream and group name docvec uses. Nowhere else spells a key."""

from __future__ import annotations

from dataclasses import dataclass

CONSUMER_GROUP = "docvec-workers"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one deployment prefix.

    With `hash_tag=True` the prefix is wrapped in braces (`{docvec}:tasks:high`) so that every key
    of the deployment hashes to one Redis Cluster slot and multi-key commands stay legal.
    """

    prefix: str = "docvec"
    hash_tag: bool = False

    @property
    def _base(self) -> str:
        return f"{{{self.prefix}}}" if self.hash_tag else self.prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self._base, *parts))

    @property
    def group(self) -> str:
        return CONSUMER_GROUP

    @property
    def stream_high(self) -> str:
        return self._key("tasks", "high")

    @property
    def stream_normal(self) -> str:
        return self._key("tasks", "normal")

    @property
    def streams(self) -> tuple[str, str]:
        """Task streams in read order: high priority first."""
        return (self.stream_high, self.stream_normal)

    def stream_for(self, priority: str) -> str:
        if priority == "high":
            return self.stream_high
        if priority == "normal":
            return self.stream_normal
        raise ValueError(f"unknown priority {priority!r} (expected 'high' or 'normal')")

    @property
    def dead_letter(self) -> str:
        return self._key("tasks", "dead")

    @property
    def workers(self) -> str:
        """Sorted set: consumer name -> last heartbeat (unix seconds)."""
        return self._key("workers")

    def worker(self, consumer: str) -> str:
        """JSON record of one worker, with a TTL."""
        return self._key("worker", consumer)

    def cancel(self, task_id: str) -> str:
        return self._key("cancel", task_id)

    def task_events(self, task_id: str) -> str:
        """Pub/sub channel carrying one task's progress events."""
        return self._key("events", task_id)

    @property
    def all_events(self) -> str:
        """Pub/sub channel carrying every task's progress events (dashboard)."""
        return self._key("events")

    @property
    def janitor_lock(self) -> str:
        return self._key("lock", "janitor")
