"""`S3Store`: blobs in an S3 bucket (AWS S3 or any S3-compatible store: MinIO, R2, ...) via aioboto3.

The composition root (`common.storage.factory`) builds the aioboto3 session and hands in a function
that makes the client's async context manager; the store opens that one client on first use, inside
the running event loop (an unused store never starts a coroutine), and closes it in `close()`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, NoReturn, TypeVar

import aiohttp
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError  # type: ignore[import-untyped]
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from common.dependencies import Dependency
from common.errors import DependencyUnavailable, DocvecError, NotFound
from common.settings import S3_MIN_PART_BYTES, StorageSettings
from common.storage.local import validate_key

log = logging.getLogger(__name__)

T = TypeVar("T")
S3Client = Any  # aiobotocore ships no type stubs

MAX_PARTS = 10_000
"""S3's limit on parts per multipart upload."""
_HASH_IN_THREAD_BYTES = 1024 * 1024
"""Hash bodies larger than this in a worker thread, not on the event loop."""

# Error codes S3 and compatible stores use for "slow down / try again", whatever the HTTP status.
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
    }
)
_MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_retryable(exc: BaseException) -> bool:
    """Connection trouble, timeouts, throttling and 5xx are worth retrying; any other 4xx is not."""
    if isinstance(exc, ClientError):
        status = _http_status(exc)
        return status >= 500 or status == 429 or _error_code(exc) in _RETRYABLE_CODES
    return isinstance(exc, BotoConnectionError | HTTPClientError | aiohttp.ClientError | TimeoutError)


def _content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


async def _content_md5_async(body: bytes) -> str:
    if len(body) > _HASH_IN_THREAD_BYTES:
        return await asyncio.to_thread(_content_md5, body)
    return _content_md5(body)


class S3Store:
    """`ObjectStore` on one S3 bucket, keys optionally under a prefix (`<prefix>/<key>`).

    Objects above `multipart_threshold_bytes` go up as a multipart upload (aborted on failure).
    Every S3 call is retried with exponential backoff on connection errors, throttling and 5xx;
    when those persist the call raises `DependencyUnavailable` (object_store). A missing object raises `NotFound`; any
    other 4xx (AccessDenied, NoSuchBucket, ...) raises a `DocvecError` naming the S3 code, at once.
    """

    def __init__(
        self, open_client: Callable[[], AbstractAsyncContextManager[S3Client]], settings: StorageSettings
    ) -> None:
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self._settings = settings
        self._open_client = open_client
        self._client: S3Client | None = None
        self._opened: S3Client | None = None
        """The entered client; `_client` is set once the bucket check passed too."""
        self._stack = AsyncExitStack()
        self._open_lock = asyncio.Lock()
        self._closed = False

    # --- the ObjectStore protocol -------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        full_key = self._full_key(key)
        if len(data) > self._settings.multipart_threshold_bytes:
            await self._put_multipart(key, full_key, data)
            return
        md5 = await _content_md5_async(data)
        await self._call(
            "PutObject",
            key,
            lambda c: c.put_object(Bucket=self.bucket, Key=full_key, Body=data, ContentMD5=md5),
        )

    async def get(self, key: str) -> bytes:
        full_key = self._full_key(key)

        async def fetch(client: S3Client) -> bytes:
            # Reading the body is inside the retried call: a connection dropped mid-body retries too.
            response = await client.get_object(Bucket=self.bucket, Key=full_key)
            async with response["Body"] as body:
                data: bytes = await body.read()
            return data

        return await self._call("GetObject", key, fetch)

    async def delete(self, key: str) -> None:
        """Delete a key; deleting a missing key is not an error (S3 answers 204 either way)."""
        full_key = self._full_key(key)
        await self._call("DeleteObject", key, lambda c: c.delete_object(Bucket=self.bucket, Key=full_key))

    async def exists(self, key: str) -> bool:
        full_key = self._full_key(key)
        try:
            await self._call("HeadObject", key, lambda c: c.head_object(Bucket=self.bucket, Key=full_key))
        except NotFound:
            return False
        return True

    async def close(self) -> None:
        """Close the client (its connection pool); the store cannot be used afterwards."""
        self._closed = True
        self._client = self._opened = None
        await self._stack.aclose()

    # --- internals ----------------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _put_multipart(self, key: str, full_key: str, data: bytes) -> None:
        created = await self._call(
            "CreateMultipartUpload",
            key,
            lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=full_key),
        )
        upload_id: str = created["UploadId"]
        try:
            parts = await self._upload_parts(key, full_key, upload_id, data)
            await self._call(
                "CompleteMultipartUpload",
                key,
                lambda c: c.complete_multipart_upload(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            # Parts of an unfinished upload are billed until aborted; abort even when cancelled.
            await asyncio.shield(self._abort_multipart(key, full_key, upload_id))
            raise

    def _part_size_bytes(self, size_bytes: int) -> int:
        return max(self._settings.multipart_part_size_bytes, S3_MIN_PART_BYTES, math.ceil(size_bytes / MAX_PARTS))

    async def _upload_parts(self, key: str, full_key: str, upload_id: str, data: bytes) -> list[dict[str, Any]]:
        part_size = self._part_size_bytes(len(data))
        limit = asyncio.Semaphore(self._settings.multipart_concurrency)
        etags: dict[int, str] = {}

        async def upload(number: int, start: int) -> None:
            async with limit:
                body = data[start : start + part_size]
                md5 = await _content_md5_async(body)
                response = await self._call(
                    "UploadPart",
                    key,
                    lambda c: c.upload_part(
                        Bucket=self.bucket,
                        Key=full_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,
                        ContentMD5=md5,
                    ),
                )
                etags[number] = response["ETag"]

        try:
            async with asyncio.TaskGroup() as group:
                for number, start in enumerate(range(0, len(data), part_size), start=1):
                    group.create_task(upload(number, start))
        except ExceptionGroup as failures:
            # Callers expect this store's error types, not a group: surface the first failure.
            raise failures.exceptions[0] from None
        return [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]

    async def _abort_multipart(self, key: str, full_key: str, upload_id: str) -> None:
        try:
            await self._call(
                "AbortMultipartUpload",
                key,
                lambda c: c.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id),
            )
        except DocvecError as exc:  # the original failure matters more; a bucket lifecycle rule can clean up
            log.warning("could not abort multipart upload %s of %s: %s", upload_id, full_key, exc)

    async def _get_client(self) -> S3Client:
        if self._client is not None:
            return self._client
        async with self._open_lock:
            if self._closed:
                raise RuntimeError("S3Store is closed")
            if self._client is None:
                if self._opened is None:  # one client for the store's life, even if the check below fails
                    self._opened = await self._stack.enter_async_context(self._open_client())
                await self._check_bucket(self._opened)
                self._client = self._opened
        return self._client

    async def _check_bucket(self, client: S3Client) -> None:
        """Fail early and clearly on a missing bucket or bad credentials (or create the bucket)."""
        try:
            await self._retrying(client, lambda c: c.head_bucket(Bucket=self.bucket))
            return
        except ClientError as exc:
            missing = _error_code(exc) in {"404", "NoSuchBucket", "NotFound"}
            if not (missing and self._settings.create_bucket):
                self._raise_translated("HeadBucket", "", exc)
        except Exception as exc:
            self._raise_translated("HeadBucket", "", exc)
        await self._create_bucket(client)

    async def _create_bucket(self, client: S3Client) -> None:
        region = self._settings.region
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._retrying(client, lambda c: c.create_bucket(**kwargs))
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":  # else another process won the race
                self._raise_translated("CreateBucket", "", exc)
        except Exception as exc:
            self._raise_translated("CreateBucket", "", exc)

    async def _retrying(self, client: S3Client, fn: Callable[[S3Client], Awaitable[T]]) -> T:
        settings = self._settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(settings.max_attempts),
            # backoff * 2**(n-1), capped, plus up to one `backoff` of jitter so that workers spread out.
            wait=wait_exponential(multiplier=settings.retry_backoff_s, max=settings.retry_backoff_max_s)
            + wait_random(0, settings.retry_backoff_s),
            retry=retry_if_exception(is_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await fn(client)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _call(self, operation: str, key: str, fn: Callable[[S3Client], Awaitable[T]]) -> T:
        """Run one S3 call with retries; translate what escapes into docvec's error types."""
        client = await self._get_client()
        try:
            return await self._retrying(client, fn)
        except Exception as exc:
            self._raise_translated(operation, key, exc)

    def _raise_translated(self, operation: str, key: str, exc: Exception) -> NoReturn:
        translated = self._translate(operation, key, exc)
        if translated is None:
            raise exc
        raise translated from exc

    def _translate(self, operation: str, key: str, exc: Exception) -> DocvecError | None:
        """docvec's error for a failed S3 call, or None to let an unexpected error through as it is."""
        where = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}{key}"
        if isinstance(exc, ClientError):
            code = _error_code(exc) or str(_http_status(exc))
            if code in _MISSING_OBJECT_CODES and key:
                return NotFound(f"object {key!r} not found")
            if is_retryable(exc):
                return DependencyUnavailable(
                    Dependency.OBJECT_STORE,
                    f"S3 {operation} {where}: still {code} after {self._settings.max_attempts} attempts",
                )
            if code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                return DocvecError(
                    f"S3 {operation} {where}: {code}; check the storage credentials and bucket policy",
                    code="storage_forbidden",
                )
            if code in {"404", "NoSuchBucket"}:
                return DocvecError(
                    f"S3 {operation} {where}: bucket {self.bucket!r} does not exist "
                    "(create it, or set storage.create_bucket)",
                    code="storage_bucket_missing",
                )
            return DocvecError(f"S3 {operation} {where} failed: {code}", code="storage_error")
        if is_retryable(exc):
            return DependencyUnavailable(
                Dependency.OBJECT_STORE,
                f"S3 {operation} {where}: endpoint unreachable after {self._settings.max_attempts} attempts "
                f"({type(exc).__name__})",
            )
        if isinstance(exc, NoCredentialsError):
            return DocvecError(
                "no S3 credentials found: set storage.access_key_id/secret_access_key or configure the "
                "default AWS credential chain",
                code="storage_forbidden",
            )
        if isinstance(exc, BotoCoreError):
            return DocvecError(f"S3 {operation} {where} failed: {exc}", code="storage_error")
        return None
