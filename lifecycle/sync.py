"""Ingest as a sync: compare what a caller has (source key -> content hash) with what a knowledge base
holds, delete what the caller no longer has, and reindex a knowledge base under new settings.

A folder ingested again costs only what changed: `plan` tells which keys are new, changed, unchanged,
unfinished (the content is there but its latest version is still queued or running: not done, so not
"unchanged"; its tasks are named, to wait for) and gone; uploads of new or changed content go through
`lifecycle.documents.submit` (which makes the same decision per document under the database's lock);
`sync` deletes the documents whose keys are gone.
Documents without a source key (added before keys existed, with a file name shared by another) are
never deleted by a sync.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.db import ACTIVE_STATUSES, KbRecord, SourceState, TaskRecord
from common.errors import InvalidRequest, NotFound
from common.runtime import Core
from common.settings import chunking_problem
from common.uploads import check_source_id
from lifecycle import documents as lifecycle

SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_SYNC_SOURCES = 1_000_000


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """Source keys by what ingesting them does; `deleted` only when missing keys are deleted. `unfinished`:
    keys whose content the knowledge base has but whose latest version is queued or running, with the ids
    of its tasks (nothing to upload; done once those are)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unfinished: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        unfinished = f"{len(self.unfinished)} unfinished from an earlier ingest, " if self.unfinished else ""
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
                f"{unfinished}{len(self.deleted)} deleted")


def plan(held: Mapping[str, SourceState], present: Mapping[str, str], *, delete_missing: bool,
         active: Mapping[str, list[str]] | None = None) -> SyncPlan:
    """What ingesting `present` (key -> SHA-256 of its content) into a knowledge base holding `held` does;
    `active`: the unfinished tasks by document id (`Tasks.active_of_kb`), named in `unfinished`."""
    out = SyncPlan()
    for key in sorted(present):
        state = held.get(key)
        if state is None:
            out.added.append(key)
        elif not state.unchanged_by(present[key]):
            out.updated.append(key)
        elif state.status in ACTIVE_STATUSES:
            out.unfinished[key] = list((active or {}).get(state.document_id, []))
        else:
            out.unchanged.append(key)
    if delete_missing:
        out.deleted.extend(sorted(held.keys() - present.keys()))
    return out


def check_sources(present: Mapping[str, str]) -> None:
    """InvalidRequest unless every key is a valid source id and every hash a lowercase SHA-256 hex digest."""
    if len(present) > MAX_SYNC_SOURCES:
        raise InvalidRequest(f"a sync names at most {MAX_SYNC_SOURCES} sources, got {len(present)}")
    for key, digest in present.items():
        check_source_id(key)
        if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
            raise InvalidRequest(f"source {key[:80]!r}: {digest!r} is not a SHA-256 hex digest")


async def sync(core: Core, kb: KbRecord, present: Mapping[str, str], *, delete_missing: bool = True,
               dry_run: bool = False) -> SyncPlan:
    """Plan ingesting `present` into `kb`; unless `dry_run`, delete the documents whose keys are gone
    (with `delete_missing`). Uploading the added and updated content is the caller's (`submit`)."""
    check_sources(present)
    held = await asyncio.to_thread(core.repo.documents.sources, kb.id)
    unfinished = any(state.status in ACTIVE_STATUSES for state in held.values())
    active = await asyncio.to_thread(core.repo.tasks.active_of_kb, kb.id) if unfinished else {}
    result = plan(held, present, delete_missing=delete_missing, active=active)
    if not dry_run:
        for key in result.deleted:
            try:
                await lifecycle.delete_document(core, held[key].document_id)
            except NotFound:  # deleted meanwhile
                continue
    return result


async def reindex(core: Core, kb: KbRecord, *, chunk_tokens: int | None = None,
                  overlap_tokens: int | None = None) -> tuple[KbRecord, list[TaskRecord]]:
    """Re-chunk and re-embed every document of `kb` with new chunking settings (default: the knowledge
    base's own) and the configured embedding model; each document's old version stays searchable until
    its new one is done. Returns the updated knowledge base and the queued tasks."""
    embedder = await core.embedders.get()
    size = chunk_tokens or kb.chunk_tokens
    overlap = kb.overlap_tokens if overlap_tokens is None else overlap_tokens
    problem = chunking_problem(size, overlap)
    if problem:
        raise InvalidRequest(problem)
    updated, tasks, superseded = await asyncio.to_thread(
        core.repo.documents.reindex, kb.id, chunk_tokens=size, overlap_tokens=overlap,
        embedding_model=embedder.name, dim=embedder.dim,
    )
    await lifecycle.flag_cancelled(core, superseded)
    return updated, [await lifecycle.enqueue(core, task) for task in tasks]
