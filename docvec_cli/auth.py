"""The CLI's side of API keys: the embedded admin key file and the key sent to a running API."""

from __future__ import annotations

import os
from pathlib import Path

from common.apikeys import ApiKeyStore
from common.settings import Settings

ADMIN_KEY_FILE = "admin.key"
API_KEY_ENV = "DOCVEC_API_KEY"
ADMIN_TENANT = "default"
"""The embedded admin key's tenant: the one the in-process `docvec ingest`/`search` paths use, so what
they ingested is visible through the API and the dashboard."""


def admin_key_path(settings: Settings) -> Path:
    return settings.data_path / ADMIN_KEY_FILE


def read_key_file(path: Path) -> str | None:
    """The key stored in `path`, or None when the file is missing or empty."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def write_key_file(path: Path, key: str) -> None:
    """Write `key` readable by its owner only (0600), replacing any previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def ensure_admin_key(store: ApiKeyStore, path: Path, *, name: str = "docvec up") -> tuple[str, bool]:
    """The admin key of `path` if it is still valid, else a new admin key written there (labelled `name`, the
    command that made it, for `docvec keys list`).

    Returns `(key, created)`. Synchronous (database and file I/O): call it from a thread.
    """
    existing = read_key_file(path)
    if existing is not None:
        record = store.authenticate(existing)
        if record is not None and record.is_admin:
            return existing, False
    issued = store.create(ADMIN_TENANT, admin=True, name=name)
    write_key_file(path, issued.secret)
    return issued.secret, True


def admin_key_notice(path: Path, key: str, created: bool) -> str:
    """What `docvec up` and `docvec api` say about the admin key: the key itself only when just created."""
    if created:  # shown once; `docvec keys show-admin` prints it again
        return f"new admin key (stored in {path}): {key}"
    return f"admin key: stored in {path} (`docvec keys show-admin` prints it)"


def resolve_api_key(explicit: str | None, settings: Settings | None) -> str | None:
    """The key for API calls: `--key`/`DOCVEC_API_KEY`, else the embedded `<data_dir>/admin.key`."""
    if explicit:
        return explicit.strip()
    if settings is None:
        return None
    return read_key_file(admin_key_path(settings))
