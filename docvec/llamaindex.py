"""A LlamaIndex retriever over a docvec knowledge base (extra: `pip install "docvec[llamaindex]"`).

    from docvec.llamaindex import DocvecRetriever

    retriever = DocvecRetriever(Client("http://127.0.0.1:8000", api_key="dvk_..."), "papers", top_k=5)
    nodes = retriever.retrieve("what limits recall?")     # or: await retriever.aretrieve(...)

Each hit becomes a `NodeWithScore` around a `TextNode` (id: the chunk id; text: the chunk's text; metadata:
document id, file name, title, page, knowledge base).
"""

from __future__ import annotations

import asyncio
from typing import Any

from docvec.client import AsyncClient, Client
from docvec.models import Hit

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError('docvec.llamaindex needs llama-index-core: pip install "docvec[llamaindex]"') from exc


class DocvecRetriever(BaseRetriever):
    """The `top_k` chunks of knowledge base `kb` closest to the query (within `filter`, a Milvus-style
    expression, if given), through a `Client` (sync calls; async ones run it in a thread) and/or an
    `AsyncClient` (async calls)."""

    def __init__(self, client: Client | None, kb: str, *, top_k: int = 5, filter: str | None = None,
                 async_client: AsyncClient | None = None, **kwargs: Any) -> None:
        if client is None and async_client is None:
            raise ValueError("DocvecRetriever needs a Client or an async_client=AsyncClient(...)")
        super().__init__(**kwargs)
        self._client, self._async_client = client, async_client
        self.kb, self.top_k, self.filter = kb, top_k, filter

    def _nodes(self, hits: list[Hit]) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(id_=hit.chunk_id, text=hit.text, metadata={
            "document_id": hit.document_id, "filename": hit.filename, "title": hit.title, "page": hit.page,
            "kb": self.kb,
        }), score=hit.score) for hit in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self._client is None:
            raise ValueError("this DocvecRetriever has only an AsyncClient: use aretrieve, or give it a Client")
        return self._nodes(self._client.search(self.kb, query_bundle.query_str, top_k=self.top_k, filter=self.filter))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = query_bundle.query_str
        if self._async_client is not None:
            hits = await self._async_client.search(self.kb, query, top_k=self.top_k, filter=self.filter)
        else:
            assert self._client is not None  # one of the two, checked in __init__
            hits = await asyncio.to_thread(self._client.search, self.kb, query, top_k=self.top_k, filter=self.filter)
        return self._nodes(hits)
