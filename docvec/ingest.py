"""A folder ingested as a sync, against any backend (the API through the client, or the CLI's in-process
stores): each file gets a source key (its path relative to the directory named; a file named directly:
its file name), the knowledge base is asked which keys are new, changed, unchanged or still unfinished,
only new and changed files are uploaded, and with `sync` the documents whose keys are gone are deleted.

What a folder holds is read with care: one file that cannot be read, or whose name cannot be a key, is
reported and left out (`Skipped`), never the end of the whole run. A name that is not UTF-8 or holds
control characters gets an escaped key (`escape_name`). Symlinks leading out of a folder are not
followed unless asked; within it each file is ingested once, under its own path."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from docvec.errors import DocvecClientError
from docvec.models import Progress, SyncPlan

HASH_BLOCK_BYTES = 1 << 20
MAX_KEY_CHARS = 512
"""The longest source key the API takes (`common.uploads.MAX_SOURCE_ID_CHARS`)."""
KEEP_DIGEST = "0" * 64
"""The digest sent for a key whose file could not be read: a sync then leaves its document alone."""
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)  # os.fsdecode's stand-ins for bytes that are not UTF-8
_SURROGATES = re.compile("[\ud800-\udfff]")


class SourceError(DocvecClientError, ValueError):
    """The paths given cannot be ingested as they are (missing, empty, two files with one key)."""


def escape_name(name: str) -> str:
    """A file name as a source key (or a part of one): the same on every run, readable, and distinct for
    distinct names. A byte that is not UTF-8 becomes `\\xNN`, a control character `\\n`, `\\r`, `\\t` or
    `\\xNN`, a backslash `\\\\` (so no other name's key can look escaped); everything else is kept."""
    if "\\" not in name and name.isprintable():
        return name
    out: list[str] = []
    for ch in name:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code in _SURROGATE_ESCAPES:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code < 0xE000:  # a lone surrogate that is no byte of a name: not UTF-8 either
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _key(parts: Iterable[str]) -> str:
    return "/".join(escape_name(part) for part in parts)


def _shown(root: Path, parts: Iterable[str] = ()) -> str:
    """A path as printed: escaped like a key, so an odd name can always be shown."""
    return "/".join([escape_name(str(root)).rstrip("/"), *(escape_name(part) for part in parts)])


@dataclass(frozen=True, slots=True)
class Source:
    """One file to ingest: where it is, its source key and the SHA-256 of its content."""

    path: Path
    key: str
    sha256: str

    @property
    def filename(self) -> str:
        """The name stored with the document, readable: a byte that is not UTF-8 shows as U+FFFD (the key keeps
        it exactly, escaped); the API makes the rest safe (`common.uploads.safe_filename`)."""
        return _SURROGATES.sub("\ufffd", self.path.name)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file left out, and why. `error`: it was meant to be ingested and could not be (unreadable, a name
    that cannot be a key): the ingest reports failure. Otherwise it was left out by rule (a symlink not
    followed, a pipe). `key`: the source key of an unreadable file, or the key prefix (ending in `/`) of a
    folder that could not be listed: a sync keeps the documents under it."""

    path: str
    reason: str
    error: bool
    key: str | None = None


@dataclass(slots=True)
class Collected:
    """The files to ingest, and those left out."""

    sources: list[Source] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def errors(self) -> list[Skipped]:
        return [s for s in self.skipped if s.error]

    @property
    def kept_keys(self) -> list[str]:
        """Keys of files there but unreadable, and key prefixes (ending in `/`; `""` for all) of folders that
        could not be read: a sync must not delete their documents."""
        return [s.key for s in self.skipped if s.error and s.key is not None]


@dataclass(slots=True)
class IngestReport:
    """What an ingest did: the plan, and the task of each key it waits for (task id -> key): the tasks it
    queued, and those of the plan's unfinished keys."""

    plan: SyncPlan
    labels: dict[str, str] = field(default_factory=dict)
    queued: list[tuple[str, str, str]] = field(default_factory=list)  # (key, outcome, task id)


class Backend(Protocol):
    """Where the knowledge base lives."""

    async def sync(self, present: dict[str, str], *, delete_missing: bool, dry_run: bool) -> SyncPlan: ...

    async def submit(self, source: Source) -> tuple[str | None, str]: ...  # (task id, outcome)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            h.update(block)
    return h.hexdigest()


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_problem(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop: not followed"
    if exc.errno == errno.ENOENT:
        return "a broken symlink: its target does not exist"
    return f"a symlink that cannot be followed: {exc.strerror or exc}"


class _FolderWalk:
    """The files of one folder named for ingest: regular files under their paths first, then the symlinks
    met on the way, each file and folder once (a real path wins over a link to it; a link to a folder
    already walked, a loop included, is not walked again). Hidden names (a leading dot) are left out."""

    def __init__(self, root: Path, *, follow_symlinks: bool, out: Collected) -> None:
        self._root = root
        self._inside = os.path.realpath(root)
        self._follow = follow_symlinks
        self._out = out
        self._files: dict[tuple[int, int], str] = {}  # identity -> key
        self._folders: dict[tuple[int, int], str] = {}  # identity -> its path under the root ("" the root)
        self._links: list[tuple[list[str], Path]] = []
        self.found: list[tuple[Path, str]] = []

    def run(self) -> list[tuple[Path, str]]:
        self._walk(self._root, [])
        while self._links:  # links met while walking a followed link's folder come round again
            links, self._links = sorted(self._links, key=lambda item: item[0]), []
            for parts, path in links:
                self._follow_link(path, parts)
        return self.found

    def _skip(self, parts: list[str], reason: str, *, error: bool, key: str | None = None) -> None:
        self._out.skipped.append(Skipped(_shown(self._root, parts), reason, error, key))

    def _walk(self, folder: Path, parts: list[str]) -> None:
        stack = [(folder, parts)]
        while stack:
            here, at = stack.pop()
            try:
                identity = _identity(here.stat())
                if identity in self._folders:  # reached before through a followed link: its files are in
                    continue
                self._folders[identity] = "/".join(at)
                with os.scandir(here) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
            except OSError as exc:
                # Its files are unknown: a sync keeps every document under it (the key prefix).
                self._skip(at, f"a folder that cannot be read: {exc.strerror or exc}", error=True,
                           key=_key(at) + "/" if at else "")
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                sub = [*at, entry.name]
                try:
                    if entry.is_symlink():
                        self._links.append((sub, Path(entry.path)))
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), sub))
                    elif entry.is_file(follow_symlinks=False):
                        self._add(Path(entry.path), sub, entry.stat(follow_symlinks=False))
                    else:
                        self._skip(sub, "not a regular file (a pipe, socket or device)", error=False)
                except OSError as exc:
                    self._skip(sub, f"cannot be read: {exc.strerror or exc}", error=True, key=_key(sub))

    def _add(self, path: Path, parts: list[str], st: os.stat_result) -> None:
        key = _key(parts)
        self._files.setdefault(_identity(st), key)
        self.found.append((path, key))

    def _follow_link(self, path: Path, parts: list[str]) -> None:
        try:
            st = path.stat()
        except OSError as exc:
            self._skip(parts, _link_problem(exc), error=False)
            return
        target = os.path.realpath(path)
        if not self._follow and not _within(target, self._inside):
            self._skip(parts, f"a symlink to {escape_name(target)}, outside the folder: not followed "
                              "(--follow-symlinks follows it)", error=False)
            return
        if stat.S_ISDIR(st.st_mode):
            seen = self._folders.get(_identity(st))
            if seen is not None:
                self._skip(parts, f"a symlink to the folder {escape_name(seen) or '.'} (walked already)", error=False)
            else:
                self._walk(path, parts)
        elif stat.S_ISREG(st.st_mode):
            seen = self._files.get(_identity(st))
            if seen is not None:
                self._skip(parts, f"a symlink to {seen} (ingested under that name)", error=False)
            else:
                self._add(path, parts, st)
        else:
            self._skip(parts, "a symlink to something that is not a regular file", error=False)


def _key_problem(key: str) -> str | None:
    """Why the API would refuse `key` (`common.uploads.check_source_id`), or None."""
    if not key.strip():
        return "a name of only spaces cannot be a source key"
    if len(key) > MAX_KEY_CHARS:
        return f"its source key would be {len(key)} characters, over the limit of {MAX_KEY_CHARS}"
    return None


def scan_sources(paths: Sequence[Path | str], *, source_id: str | None = None, sync: bool = False,
                 follow_symlinks: bool = False) -> Collected:
    """The files under `paths` with their source keys and content hashes, and the files left out with the
    reason. A folder's symlinks to files or folders outside it are followed only with `follow_symlinks`; a
    file named directly is read wherever it is. SourceError when the paths themselves are wrong (missing,
    not folders for a sync, two files with one key, nothing to ingest)."""
    roots = [Path(p) for p in paths]
    if sync and not all(p.is_dir() for p in roots):
        raise SourceError("a sync compares directories with the knowledge base: name directories only")
    out = Collected()
    keyed: list[tuple[Path, str]] = []
    for path in roots:
        if path.is_dir():
            keyed += _FolderWalk(path, follow_symlinks=follow_symlinks, out=out).run()
        elif path.is_file():
            keyed.append((path, escape_name(path.name)))
        else:
            raise SourceError(f"{_shown(path)} does not exist")
    if source_id is not None:
        if len(keyed) != 1:
            raise SourceError("a source id names the key of one file; it was given with several")
        keyed = [(path, source_id) for path, _ in keyed]
    seen: dict[str, Path] = {}
    for path, key in keyed:
        if key in seen:
            raise SourceError(f"{_shown(seen[key])} and {_shown(path)} would both be source {key!r}; "
                              "ingest them separately")
        seen[key] = path
    for path, key in sorted(keyed, key=lambda item: item[1]):
        problem = _key_problem(key) if source_id is None else None
        if problem is not None:
            out.skipped.append(Skipped(_shown(path), problem, True))
            continue
        try:
            out.sources.append(Source(path, key, sha256_file(path)))
        except OSError as exc:
            out.skipped.append(Skipped(_shown(path), f"cannot be read: {exc.strerror or exc}", True, key))
    if not out.sources:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in out.skipped[:5])
        raise SourceError("no files to ingest" + (f" ({len(out.skipped)} left out: {reasons})" if reasons else ""))
    return out


def collect_sources(paths: Sequence[Path | str], *, source_id: str | None = None, sync: bool = False) -> list[Source]:
    """`scan_sources`'s files, strictly: SourceError when any file meant to be ingested cannot be."""
    collected = scan_sources(paths, source_id=source_id, sync=sync)
    if collected.errors:
        first = collected.errors[0]
        raise SourceError(f"{first.path}: {first.reason}")
    return collected.sources


async def scan_sources_async(paths: Sequence[Path | str], *, source_id: str | None = None, sync: bool = False,
                             follow_symlinks: bool = False) -> Collected:
    """`scan_sources` off the event loop (it walks directories and hashes files)."""
    return await asyncio.to_thread(scan_sources, paths, source_id=source_id, sync=sync,
                                   follow_symlinks=follow_symlinks)


def _is_folder_prefix(key: str) -> bool:
    return key == "" or key.endswith("/")


async def _deletions(backend: Backend, present: dict[str, str], keep: Sequence[str], *, dry_run: bool) -> list[str]:
    """The keys a sync deletes (would delete, with `dry_run`): those not in `present`, never a `keep` key
    (a file there but unreadable) nor one under a `keep` folder prefix (a folder that could not be read).
    Deleting is all these calls do with the keys given, so any valid digest keeps a key's document."""
    guarded = {key: KEEP_DIGEST for key in keep if not _is_folder_prefix(key) and _key_problem(key) is None}
    guarded |= present
    prefixes = tuple(key for key in keep if _is_folder_prefix(key))
    if prefixes:
        planned = (await backend.sync(guarded, delete_missing=True, dry_run=True)).deleted
        guarded |= {key: KEEP_DIGEST for key in planned if key.startswith(prefixes)}
    return (await backend.sync(guarded, delete_missing=True, dry_run=dry_run)).deleted


async def run_ingest(backend: Backend, sources: list[Source], *, sync: bool, dry_run: bool,
                     keep: Sequence[str] = (), on_progress: Callable[[Progress], None] | None = None) -> IngestReport:
    """Plan, upload what is new or changed, then delete what is gone (with `sync`; never the documents of
    `keep`: `Collected.kept_keys`). A key whose content the knowledge base has but whose latest version is
    unfinished (queued or running) is not uploaded again: its tasks join the report's labels, to wait for."""
    present = {s.key: s.sha256 for s in sources}
    plan = await backend.sync(present, delete_missing=False, dry_run=True)
    report = IngestReport(SyncPlan(unchanged=list(plan.unchanged), unfinished=dict(plan.unfinished)))
    if dry_run:
        report.plan.added.extend(plan.added)
        report.plan.updated.extend(plan.updated)
        if sync:
            report.plan.deleted.extend(await _deletions(backend, present, keep, dry_run=True))
        return report
    for key, task_ids in plan.unfinished.items():
        report.labels.update(dict.fromkeys(task_ids, key))
    settled = set(plan.unchanged) | set(plan.unfinished)
    todo = [s for s in sources if s.key not in settled]
    for done, source in enumerate(todo, 1):
        task_id, outcome = await backend.submit(source)
        {"added": report.plan.added, "updated": report.plan.updated}.get(outcome, report.plan.unchanged).append(
            source.key
        )
        if task_id is not None:
            report.labels[task_id] = source.key
            report.queued.append((source.key, outcome, task_id))
        if on_progress is not None:
            on_progress(Progress("upload", done, len(todo), source.key))
    if sync:
        report.plan.deleted.extend(await _deletions(backend, present, keep, dry_run=False))
    return report
