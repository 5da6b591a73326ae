"""`docvec keys ...` and the embedded admin key file."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.apikeys import ApiKeyStore, hash_key
from common.db import open_database
from common.settings import Settings
from docvec_cli.auth import admin_key_path, ensure_admin_key, read_key_file, resolve_api_key
from docvec_cli.main import app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def runner(data_dir: Path) -> CliRunner:
    return CliRunner(env={"DOCVEC_DATA_DIR": str(data_dir), "DOCVEC_API_KEY": None})


@pytest.fixture
def store(data_dir: Path) -> Iterator[ApiKeyStore]:
    database = open_database(Settings(data_dir=str(data_dir)).db_url)
    try:
        yield ApiKeyStore(database)
    finally:
        database.close()


def test_create_prints_the_key_alone_on_the_last_line(runner: CliRunner, store: ApiKeyStore) -> None:
    result = runner.invoke(app, ["keys", "create", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("dvk_") and " " not in key
    record = store.authenticate(key)
    assert record is not None and record.tenant == "acme" and not record.is_admin


def test_admin_keys_list_and_revoke(runner: CliRunner, store: ApiKeyStore) -> None:
    key = runner.invoke(app, ["keys", "create", "--tenant", "ops", "--admin", "--name", "pager"]).output.split()[-1]
    record = store.authenticate(key)
    assert record is not None and record.is_admin
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and record.id in listed.output and "pager" in listed.output
    assert key not in listed.output and key[:12] in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", record.id])
    assert revoked.exit_code == 0, revoked.output
    assert store.authenticate(key) is None
    assert record.id not in runner.invoke(app, ["keys", "list"]).output
    assert record.id in runner.invoke(app, ["keys", "list", "--revoked"]).output


def test_bad_input_is_a_usage_error(runner: CliRunner) -> None:
    assert runner.invoke(app, ["keys", "create", "--tenant", "no/slashes"]).exit_code == 2
    assert runner.invoke(app, ["keys", "revoke", "nope"]).exit_code == 2


def test_the_admin_key_file_is_private_and_reused(tmp_path: Path, store: ApiKeyStore) -> None:
    path = tmp_path / "admin.key"
    key, created = ensure_admin_key(store, path)
    assert created and read_key_file(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_admin_key(store, path) == (key, False)
    record = store.authenticate(key)
    assert record is not None and record.is_admin
    store.revoke(record.id)  # a revoked (or foreign) key in the file is replaced
    new_key, created = ensure_admin_key(store, path)
    assert created and new_key != key and read_key_file(path) == new_key
    assert hash_key(new_key) != new_key


def test_api_key_resolution(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    assert resolve_api_key(None, settings) is None
    admin_key_path(settings).write_text("dvk_from_file\n")
    assert resolve_api_key(None, settings) == "dvk_from_file"
    assert resolve_api_key("dvk_explicit", settings) == "dvk_explicit"


def test_show_admin_prints_the_stored_admin_key_while_it_is_valid(runner: CliRunner, store: ApiKeyStore,
                                                                  data_dir: Path) -> None:
    missing = runner.invoke(app, ["keys", "show-admin"])
    assert missing.exit_code == 1 and "docvec up" in missing.output
    key, created = ensure_admin_key(store, admin_key_path(Settings(data_dir=str(data_dir))))
    assert created
    shown = runner.invoke(app, ["keys", "show-admin"])
    assert shown.exit_code == 0 and shown.output.strip() == key
    record = store.authenticate(key)
    assert record is not None
    store.revoke(record.id)
    revoked = runner.invoke(app, ["keys", "show-admin"])
    assert revoked.exit_code == 1 and "revoked" in revoked.output and key not in revoked.output
