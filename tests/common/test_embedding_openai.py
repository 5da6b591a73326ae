"""The OpenAI-compatible HTTP backend (`common/embedding/openai_embedder.py`) against a local server."""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from common.embedding import Embedder, build_embedder
from common.embedding.openai_embedder import OpenAIEmbedder
from common.embedding.st_embedder import bundled_model_path
from common.embedding.tokenizer import ModelTokenizer
from common.errors import PermanentError, TransientError
from common.settings import EmbeddingSettings

DIM = 8


def fake_vector(text: str) -> list[float]:
    """Deterministic, deliberately not normalized: the client must normalize."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    return (rng.standard_normal(DIM) * 3.0).tolist()


@dataclass
class FakeServer:
    """State of the fake endpoint: what it received, and the failures to answer next."""

    url: str = ""
    requests: list[dict[str, object]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)

    def reset(self) -> None:
        self.requests.clear()
        self.auth_headers.clear()
        self.fail_next.clear()


def _app(state: FakeServer) -> Starlette:
    async def embeddings(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        state.auth_headers.append(request.headers.get("authorization"))
        if state.fail_next:
            status = state.fail_next.pop(0)
            return PlainTextResponse(f"injected {status}", status_code=status, headers={"Retry-After": "0"})
        texts: list[str] = body["input"]
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(texts)]
        model = body["model"]
        if model == "reversed":
            data.reverse()  # OpenAI does not promise order; the client sorts by index
        elif model == "malformed":
            return PlainTextResponse("<html>gateway says hi</html>")
        elif model == "short":
            data = data[:-1]
        return JSONResponse({"object": "list", "data": data, "model": model})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    state = FakeServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_app(state), log_level="warning", lifespan="off", ws="none")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "fake embedding server did not start"
        time.sleep(0.02)
    state.url = f"http://127.0.0.1:{port}/v1"
    yield state
    uv.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def fake(server: FakeServer) -> FakeServer:
    server.reset()
    return server


@pytest.fixture
def make(fake: FakeServer) -> Iterator[Callable[..., OpenAIEmbedder]]:
    """Builds embedders against the fake server (fast retries) and closes them after the test."""
    made: list[OpenAIEmbedder] = []

    def build(model: str = "fake-embed", **kwargs: object) -> OpenAIEmbedder:
        options: dict[str, object] = {"retries": 3, "backoff_max_s": 0.01, "timeout_s": 5.0, **kwargs}
        made.append(OpenAIEmbedder(api_base=fake.url, model=model, **options))  # type: ignore[arg-type]
        return made[-1]

    yield build
    for embedder in made:
        embedder.close()


def test_discovers_dim_and_encodes_normalized_batches(fake: FakeServer, make: Callable[..., OpenAIEmbedder]) -> None:
    embedder = make(api_key="sk-test")
    assert isinstance(embedder, Embedder)
    assert embedder.dim == DIM and embedder.name == "fake-embed"
    assert len(fake.requests) == 1  # the dimension probe
    texts = [f"text {i}" for i in range(5)] + [""]
    vectors = embedder.encode(texts, batch_size=2)
    assert vectors.shape == (6, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    expected = np.asarray(fake_vector("text 3"), dtype=np.float32)
    np.testing.assert_allclose(vectors[3], expected / np.linalg.norm(expected), atol=1e-6)
    assert len(fake.requests) == 1 + 3
    assert fake.requests[-1] == {"model": "fake-embed", "input": ["text 4", " "], "encoding_format": "float"}
    assert set(fake.auth_headers) == {"Bearer sk-test"}
    assert embedder.encode([], batch_size=4).shape == (0, DIM)


def test_reorders_by_index(fake: FakeServer, make: Callable[..., OpenAIEmbedder]) -> None:
    embedder = make(model="reversed", dim=DIM)
    assert not fake.requests  # dim given: no probe
    texts = ["alpha", "beta", "gamma"]
    vectors = embedder.encode(texts, batch_size=8)
    for row, text in enumerate(texts):
        expected = np.asarray(fake_vector(text), dtype=np.float32)
        np.testing.assert_allclose(vectors[row], expected / np.linalg.norm(expected), atol=1e-6)
    assert fake.auth_headers == [None]  # no key, no header


def test_retries_429_and_5xx(fake: FakeServer, make: Callable[..., OpenAIEmbedder]) -> None:
    embedder = make(dim=DIM)
    fake.fail_next[:] = [429, 500, 502]
    vectors = embedder.encode(["retry me"], batch_size=4)
    assert vectors.shape == (1, DIM)
    assert len(fake.requests) == 4 and not fake.fail_next


def test_gives_up_with_a_transient_error(fake: FakeServer, make: Callable[..., OpenAIEmbedder]) -> None:
    embedder = make(dim=DIM, retries=2)
    fake.fail_next[:] = [503] * 5
    with pytest.raises(TransientError, match="after 3 attempts") as caught:
        embedder.encode(["x"], batch_size=4)
    assert caught.value.code == "embedding_unavailable"
    assert len(fake.requests) == 3


def test_rejected_input_is_permanent_and_not_retried(fake: FakeServer, make: Callable[..., OpenAIEmbedder]) -> None:
    embedder = make(dim=DIM)
    fake.fail_next[:] = [400]
    with pytest.raises(PermanentError, match="rejected the input") as caught:
        embedder.encode(["x"], batch_size=4)
    assert caught.value.code == "embedding_rejected"
    assert len(fake.requests) == 1


@pytest.mark.parametrize("model", ["malformed", "short"])
def test_bad_response_is_a_clear_error(fake: FakeServer, make: Callable[..., OpenAIEmbedder], model: str) -> None:
    embedder = make(model=model, dim=DIM)
    with pytest.raises(TransientError, match="malformed response") as caught:
        embedder.encode(["one", "two"], batch_size=4)
    assert caught.value.code == "embedding_bad_response"
    assert len(fake.requests) == 1  # a bad body is not retried in a loop


def test_dimension_mismatch_is_a_clear_error(fake: FakeServer, make: Callable[..., OpenAIEmbedder]) -> None:
    embedder = make(dim=DIM + 1)
    with pytest.raises(TransientError, match="expected 9"):
        embedder.encode(["x"], batch_size=4)


def test_connection_errors_are_retried_then_transient() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embedder = OpenAIEmbedder(
        api_base=f"http://127.0.0.1:{port}/v1", model="m", dim=DIM, retries=1, backoff_max_s=0.01, timeout_s=2.0
    )
    with embedder, pytest.raises(TransientError, match="after 2 attempts"):
        embedder.encode(["x"], batch_size=1)


def test_tokens_come_from_the_local_tokenizer(fake: FakeServer, make: Callable[..., OpenAIEmbedder]) -> None:
    embedder = make(dim=DIM)
    local = ModelTokenizer.from_model_dir(bundled_model_path())
    text = "Tokenization of naïve café-style text: Übergröße, 12,345 items!"
    assert embedder.count_tokens(text) == local.count_tokens(text)
    assert embedder.token_offsets(text) == local.token_offsets(text)
    assert embedder.token_offsets_batch([text]) == [local.token_offsets(text)]
    assert embedder.max_tokens == 254
    assert make(dim=DIM, max_tokens=8000).max_tokens == 8000


def test_factory_and_settings(fake: FakeServer, make: Callable[..., OpenAIEmbedder]) -> None:
    settings = EmbeddingSettings(
        backend="openai",
        api_base=fake.url,
        model="fake-embed",
        api_key=SecretStr("sk-secret-1"),
        api_retries=0,
        api_max_tokens=500,
    )
    embedder = build_embedder(settings)
    assert isinstance(embedder, OpenAIEmbedder)
    embedder.close()
    assert embedder.dim == DIM and embedder.max_tokens == 500
    assert fake.auth_headers == ["Bearer sk-secret-1"]
    assert "sk-secret-1" not in repr(settings)  # the key is a secret
    with pytest.raises(ValueError, match="api_base"):
        EmbeddingSettings(backend="openai", model="fake-embed")
