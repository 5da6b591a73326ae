"""An OpenAI-compatible `/v1/embeddings` endpoint behind `Embedder` (OpenAI, vLLM, TEI, Ollama, LiteLLM).

Token counts and offsets (chunk sizing) come from the local tokenizer (by default the bundled
all-MiniLM-L6-v2's), not from the remote model's: chunk lengths are measured in local tokens, which for
WordPiece vs BPE differ by a few percent. Keep `chunking.chunk_tokens` well below the remote limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from common.dependencies import Dependency
from common.embedding.batches import batches_by_count
from common.embedding.st_embedder import bundled_model_path
from common.embedding.tokenizer import ModelTokenizer
from common.errors import DependencyUnavailable, PermanentError, TransientError

# Statuses that mean "try again later"; other 4xx mean the request or the configuration is wrong.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Rejections of the input itself (too long, malformed): no retry of the task can fix them.
INPUT_REJECTED_STATUSES = frozenset({400, 413, 422})


class _RetryableStatus(Exception):
    """A response worth retrying; carries the server's Retry-After, if any."""

    def __init__(self, status: int, body: str, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.retry_after_s = retry_after_s


def _retry_after_s(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class OpenAIEmbedder:
    """`Embedder` calling `POST {api_base}/embeddings` with batches of texts. Blocking and thread-safe.

    `dim` 0 asks the endpoint for one vector at construction to learn the size. Retries (tenacity,
    exponential backoff with jitter, honouring Retry-After up to `backoff_max_s`) cover 429, 5xx and
    connection errors; when they run out the call raises `TransientError`. A rejected input (400, 413,
    422) raises `PermanentError`; a malformed response raises `TransientError` with code
    `embedding_bad_response`. Vectors are L2-normalized here, whatever the server returns.
    """

    def __init__(
        self,
        *,
        api_base: str,
        model: str,
        api_key: str = "",
        dim: int = 0,
        max_tokens: int = 0,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_max_s: float = 30.0,
        tokenizer_model_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_base or not model:
            raise ValueError("the openai embedding backend needs embedding.api_base and embedding.model")
        self._url = api_base.rstrip("/") + "/embeddings"
        self._model = model
        self._tokenizer = ModelTokenizer.from_model_dir(tokenizer_model_dir or bundled_model_path())
        self._max_tokens = max_tokens or self._tokenizer.max_tokens
        self._retries = retries
        self._backoff_max_s = backoff_max_s
        # 0.5 s, 1 s, 2 s, ... plus up to 0.5 s of jitter so many workers do not retry in lockstep.
        self._backoff = wait_exponential(multiplier=0.5, max=backoff_max_s) + wait_random(0, 0.5)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers, transport=transport)
        self._dim = dim or int(self._post(["dimension probe"]).shape[1])

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._model

    @property
    def max_tokens(self) -> int:
        """`embedding.api_max_tokens`, or the local model's limit; measured with the local tokenizer."""
        return self._max_tokens

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalized; one request per `batch_size` texts."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        parts = [self._post(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
        vectors = np.concatenate(parts)
        if vectors.shape[1] != self._dim:
            raise TransientError(
                f"embedding endpoint {self._url} returned {vectors.shape[1]}-d vectors, expected {self._dim}",
                code="embedding_bad_response",
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

    def plan_batches(self, texts: list[str], batch_size: int,
                     token_counts: Sequence[int | None] | None = None) -> list[list[int]]:
        """`batch_size` texts per request, similar lengths together (the endpoint pads nothing of ours)."""
        return batches_by_count([len(text) for text in texts], batch_size)

    def count_tokens(self, text: str) -> int:
        return self._tokenizer.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tokenizer.token_offsets(text)

    def token_offsets_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return self._tokenizer.token_offsets_batch(texts)

    @property
    def chunk_tokenizer(self) -> ModelTokenizer:
        """The model's tokenizer alone, picklable: what a parsing process chunks with."""
        return self._tokenizer

    def _post(self, texts: list[str]) -> np.ndarray:
        """One batch through the retry loop; (len(texts), d) float32, not yet normalized."""
        # OpenAI rejects empty strings; a lone space embeds as "no content" just the same.
        payload = {"model": self._model, "input": [text or " " for text in texts], "encoding_format": "float"}
        retrying = Retrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=self._wait_s,
            retry=retry_if_exception_type((_RetryableStatus, httpx.TransportError)),
            reraise=True,
        )
        try:
            response = retrying(self._request, payload)
        except (_RetryableStatus, httpx.TransportError) as exc:
            raise DependencyUnavailable(
                Dependency.EMBEDDING,
                f"embedding endpoint {self._url} failed after {self._retries + 1} attempts: {exc!r}",
            ) from exc
        return self._parse(response, len(texts))

    def _request(self, payload: dict[str, object]) -> httpx.Response:
        response = self._client.post(self._url, json=payload)
        if response.status_code in RETRYABLE_STATUSES or response.status_code >= 500:
            raise _RetryableStatus(response.status_code, response.text, _retry_after_s(response))
        if response.status_code in INPUT_REJECTED_STATUSES:
            raise PermanentError(
                f"embedding endpoint {self._url} rejected the input (HTTP {response.status_code}): "
                f"{response.text[:300]}",
                code="embedding_rejected",
            )
        if response.status_code != 200:
            # 401/403/404: a configuration problem (key, URL, model name); fixable without changing input.
            raise TransientError(
                f"embedding endpoint {self._url} answered HTTP {response.status_code}: {response.text[:300]}",
                code="embedding_unavailable",
            )
        return response

    def _wait_s(self, state: RetryCallState) -> float:
        backoff = min(self._backoff(state), self._backoff_max_s)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _RetryableStatus) and exc.retry_after_s is not None:
            return min(max(exc.retry_after_s, backoff), self._backoff_max_s)
        return backoff

    def _parse(self, response: httpx.Response, expected: int) -> np.ndarray:
        def bad(reason: str) -> TransientError:
            return TransientError(
                f"embedding endpoint {self._url} sent a malformed response ({reason}): {response.text[:200]}",
                code="embedding_bad_response",
            )

        try:
            items = response.json()["data"]
            ordered = sorted(items, key=lambda item: int(item["index"]))
            vectors = np.asarray([item["embedding"] for item in ordered], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise bad(type(exc).__name__) from exc
        if vectors.ndim != 2 or vectors.shape[0] != expected or vectors.shape[1] == 0:
            raise bad(f"expected {expected} vectors, got shape {vectors.shape}")
        if [int(item["index"]) for item in ordered] != list(range(expected)):
            raise bad("indexes are not 0..n-1")
        if not np.isfinite(vectors).all():
            raise bad("non-finite values")
        return vectors
