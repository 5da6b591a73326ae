"""S3Store against a real S3-protocol server (moto's server mode on 127.0.0.1), and the ObjectStore
contract run over both LocalDirStore and S3Store."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from pydantic import ValidationError

from common.errors import DocvecError, InvalidRequest, NotFound, TransientError
from common.settings import Settings, StorageSettings
from common.storage.base import ObjectStore
from common.storage.factory import build_object_store, build_s3_store
from common.storage.local import LocalDirStore
from common.storage.s3 import S3Store

# The ObjectStore contract, written once in the LocalDirStore tests; collected here again, where the
# `store` fixture below runs it over both backends.
from tests.common.test_storage_local import (  # noqa: F401
    test_bad_keys_rejected,
    test_concurrent_writers_never_tear,
    test_missing_is_not_found,
    test_round_trip,
)

MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for this module."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _s3_settings(endpoint: str, **overrides: Any) -> StorageSettings:
    values: dict[str, Any] = {
        "backend": "s3",
        "bucket": f"test-{uuid.uuid4().hex[:12]}",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "create_bucket": True,
        "max_attempts": 3,
        "retry_backoff_s": 0.01,
        "retry_backoff_max_s": 0.05,
    }
    values.update(overrides)
    return StorageSettings(**values)


def _raw_client(endpoint: str) -> Any:
    """A plain boto3 client to look behind the store's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
async def s3_store(s3_endpoint: str) -> AsyncIterator[S3Store]:
    store = build_s3_store(_s3_settings(s3_endpoint))
    yield store
    await store.close()


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """Each ObjectStore backend in turn (the contract tests imported above take this one)."""
    backend: ObjectStore
    if request.param == "local":
        backend = LocalDirStore(tmp_path / "blobs")
    else:
        backend = build_s3_store(_s3_settings(request.getfixturevalue("s3_endpoint")))
    yield backend
    await backend.close()


# --- S3-specific behaviour against the moto server ----------------------------------------------


async def test_round_trip_and_not_found(s3_store: S3Store) -> None:
    assert isinstance(s3_store, ObjectStore)
    await s3_store.put("kb/1/doc", b"payload")
    assert await s3_store.exists("kb/1/doc")
    assert await s3_store.get("kb/1/doc") == b"payload"
    await s3_store.delete("kb/1/doc")
    assert not await s3_store.exists("kb/1/doc")
    with pytest.raises(NotFound):
        await s3_store.get("kb/1/doc")


async def test_key_validation_happens_before_any_request(s3_endpoint: str) -> None:
    # An unreachable endpoint: a bad key must fail with InvalidRequest, not after connection retries.
    store = build_s3_store(_s3_settings(f"http://127.0.0.1:{_free_port()}", max_attempts=1))
    try:
        for key in ("../x", "/abs", "a//b"):
            with pytest.raises(InvalidRequest):
                await store.put(key, b"x")
    finally:
        await store.close()


async def test_multipart_upload(s3_endpoint: str) -> None:
    settings = _s3_settings(s3_endpoint, multipart_threshold_bytes=5 * MIB, multipart_part_size_bytes=5 * MIB)
    store = build_s3_store(settings)
    data = bytes(range(256)) * (12 * MIB // 256) + b"tail"
    try:
        await store.put("big/blob", data)
        assert await store.get("big/blob") == data
        raw = _raw_client(s3_endpoint)
        head = await asyncio.to_thread(raw.head_object, Bucket=settings.bucket, Key="big/blob")
        assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB: a multipart ETag of 3 parts
        assert head["ContentLength"] == len(data)
        pending = await asyncio.to_thread(raw.list_multipart_uploads, Bucket=settings.bucket)
        assert not pending.get("Uploads")
        small = b"s" * (5 * MIB)  # at the threshold: a single PutObject
        await store.put("small", small)
        head = await asyncio.to_thread(raw.head_object, Bucket=settings.bucket, Key="small")
        assert "-" not in head["ETag"]
    finally:
        await store.close()


async def test_prefix_isolation(s3_endpoint: str) -> None:
    base = _s3_settings(s3_endpoint)
    one = build_s3_store(base.model_copy(update={"prefix": "tenant-a/"}))
    two = build_s3_store(base.model_copy(update={"prefix": "tenant-b"}))
    bare = build_s3_store(base)
    try:
        await one.put("doc", b"a")
        assert await one.get("doc") == b"a"
        assert not await two.exists("doc")
        with pytest.raises(NotFound):
            await two.get("doc")
        await two.put("doc", b"b")
        assert await one.get("doc") == b"a"
        assert await bare.get("tenant-a/doc") == b"a"  # the prefix is a plain key prefix
        assert not await bare.exists("doc")
        await two.delete("doc")
        assert await one.exists("doc")
    finally:
        for store in (one, two, bare):
            await store.close()


async def test_unreachable_endpoint_is_transient_and_quick() -> None:
    settings = _s3_settings(
        f"http://127.0.0.1:{_free_port()}",  # nothing listens there
        max_attempts=2,
        retry_backoff_s=0.01,
        connect_timeout_s=1.0,
        create_bucket=False,
    )
    store = build_s3_store(settings)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError):
            await store.get("k")
        with pytest.raises(TransientError):
            await store.put("k", b"x")
    finally:
        await store.close()
    assert time.monotonic() - started < 10


async def test_missing_bucket_is_a_clear_error(s3_endpoint: str) -> None:
    store = build_s3_store(_s3_settings(s3_endpoint, create_bucket=False))
    try:
        with pytest.raises(DocvecError) as caught:
            await store.put("k", b"x")
        assert caught.value.code == "storage_bucket_missing"
        assert not isinstance(caught.value, TransientError)
    finally:
        await store.close()


async def test_closed_store_refuses_use(s3_store: S3Store) -> None:
    await s3_store.put("k", b"x")
    await s3_store.close()
    with pytest.raises(RuntimeError):
        await s3_store.get("k")


# --- retry classification, with a scripted client ----------------------------------------------


def _client_error(status: int, code: str, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class _ScriptedClient:
    """Answers `put_object` / `get_object` with scripted failures; records every call."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls: list[str] = []

    async def __aenter__(self) -> _ScriptedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def head_bucket(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    async def _next(self, name: str) -> dict[str, Any]:
        self.calls.append(name)
        if self.failures:
            raise self.failures.pop(0)
        return {}

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        return await self._next("put_object")

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        return await self._next("get_object")

    async def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("create_multipart_upload")
        return {"UploadId": "u1"}

    async def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        await self._next("upload_part")
        return {"ETag": f'"{kwargs["PartNumber"]}"'}

    async def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("abort_multipart_upload")
        return {}


def _scripted_store(failures: list[Exception], max_attempts: int = 4) -> tuple[S3Store, _ScriptedClient]:
    client = _ScriptedClient(failures)
    settings = StorageSettings(backend="s3", bucket="b", max_attempts=max_attempts, retry_backoff_s=0.001)
    return S3Store(lambda: client, settings), client


async def test_retries_5xx_and_throttling_then_succeeds() -> None:
    store, client = _scripted_store(
        [_client_error(503, "SlowDown", "PutObject"), _client_error(400, "RequestTimeout", "PutObject")]
    )
    await store.put("k", b"x")
    assert client.calls == ["put_object"] * 3


async def test_persistent_5xx_becomes_transient_error() -> None:
    store, client = _scripted_store([_client_error(500, "InternalError", "PutObject")] * 5, max_attempts=3)
    with pytest.raises(TransientError):
        await store.put("k", b"x")
    assert len(client.calls) == 3


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (403, "AccessDenied", "storage_forbidden"),
        (404, "NoSuchKey", NotFound.code),
        (400, "InvalidArgument", "storage_error"),
    ],
)
async def test_4xx_is_not_retried(status: int, code: str, expected: str) -> None:
    store, client = _scripted_store([_client_error(status, code, "GetObject")] * 5)
    with pytest.raises(DocvecError) as caught:
        await store.get("k")
    assert caught.value.code == expected and not isinstance(caught.value, TransientError)
    assert client.calls == ["get_object"]


async def test_failed_multipart_upload_is_aborted_and_raises_a_plain_error() -> None:
    client = _ScriptedClient([_client_error(403, "AccessDenied", "UploadPart")])
    settings = StorageSettings(
        backend="s3",
        bucket="b",
        multipart_threshold_bytes=MIB,
        multipart_part_size_bytes=5 * MIB,
        multipart_concurrency=1,
    )
    store = S3Store(lambda: client, settings)
    with pytest.raises(DocvecError) as caught:  # not an ExceptionGroup from the part uploads
        await store.put("big", b"x" * (11 * MIB))
    assert caught.value.code == "storage_forbidden"
    assert client.calls[0] == "create_multipart_upload" and client.calls[-1] == "abort_multipart_upload"
    assert "complete_multipart_upload" not in client.calls


# --- settings and factory ------------------------------------------------------------------------


def test_settings_require_bucket_for_s3() -> None:
    assert StorageSettings().backend == "local"  # the default stays local
    with pytest.raises(ValidationError, match="bucket"):
        StorageSettings(backend="s3")
    with pytest.raises(ValidationError, match="together"):
        StorageSettings(backend="s3", bucket="b", access_key_id="AKIA")
    with pytest.raises(ValidationError):
        StorageSettings(backend="s3", bucket="b", multipart_part_size_bytes=MIB)  # below S3's 5 MiB
    assert "s3cret" not in repr(
        StorageSettings(backend="s3", bucket="b", access_key_id="a", secret_access_key="s3cret")
    )


async def test_factory_builds_s3_store(tmp_path: Path, s3_endpoint: str) -> None:
    settings = Settings(data_dir=str(tmp_path), storage=_s3_settings(s3_endpoint, prefix="p"))
    store = build_object_store(settings)
    try:
        assert isinstance(store, S3Store) and store.bucket == settings.storage.bucket and store.prefix == "p"
        await store.put("k", b"v")
        assert await store.get("k") == b"v"
    finally:
        await store.close()
