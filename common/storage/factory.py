"""Build the configured `ObjectStore` (composition roots call this once)."""

from __future__ import annotations

import aioboto3  # type: ignore[import-untyped]
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]

from common.settings import Settings, StorageSettings
from common.storage.base import ObjectStore
from common.storage.local import LocalDirStore
from common.storage.s3 import S3Store


def build_object_store(settings: Settings) -> ObjectStore:
    """The object store named by `settings.storage.backend`; the caller closes it."""
    if settings.storage.backend == "local":
        return LocalDirStore(settings.storage_dir)
    if settings.storage.backend == "s3":
        return build_s3_store(settings.storage)
    raise ValueError(f"unsupported storage backend {settings.storage.backend!r}")


def build_s3_store(storage: StorageSettings) -> S3Store:
    """One aioboto3 session and client for the process; `S3Store.close()` closes the client.

    No I/O happens here: the store opens the client (and checks the bucket) on first use.
    """
    secret = storage.secret_access_key.get_secret_value()
    session = aioboto3.Session(
        aws_access_key_id=storage.access_key_id or None,  # None: the default AWS credential chain
        aws_secret_access_key=secret or None,
        region_name=storage.region or None,
    )
    config = AioConfig(
        connect_timeout=storage.connect_timeout_s,
        read_timeout=storage.read_timeout_s,
        # S3Store retries with its own backoff policy (tenacity); botocore must not retry underneath it.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(10, storage.multipart_concurrency),
        # Custom endpoints (MinIO, moto, most self-hosted stores) want path-style URLs.
        s3={"addressing_style": "path" if storage.endpoint_url else "auto"},
        # Checksums only where S3 requires them: several S3-compatible stores reject the CRC trailers
        # botocore >= 1.36 adds by default. S3Store sends Content-MD5 for integrity instead.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    endpoint_url = storage.endpoint_url or None
    return S3Store(lambda: session.client("s3", endpoint_url=endpoint_url, config=config), storage)
