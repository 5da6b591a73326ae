"""A LangChain retriever over a docvec knowledge base (extra: `pip install "docvec[langchain]"`).

    from docvec.langchain import DocvecRetriever

    retriever = DocvecRetriever.connect("papers", base_url="http://127.0.0.1:8000", api_key="dvk_...", top_k=5)
    docs = retriever.invoke("what limits recall?")     # or: await retriever.ainvoke(...)

Each hit becomes a `Document` whose `page_content` is the chunk's text and whose metadata holds its
score, chunk and document ids, file name, title (heading path), page and knowledge base.
"""

from __future__ import annotations

import asyncio
from typing import Any

from docvec.client import AsyncClient, Client
from docvec.models import Hit

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError('docvec.langchain needs langchain-core: pip install "docvec[langchain]"') from exc

from pydantic import ConfigDict


def hit_metadata(kb: str, hit: Hit) -> dict[str, Any]:
    return {"score": hit.score, "chunk_id": hit.chunk_id, "document_id": hit.document_id, "filename": hit.filename,
            "title": hit.title, "page": hit.page, "kb": kb}


class DocvecRetriever(BaseRetriever):
    """The `top_k` chunks of knowledge base `kb` closest to the query (within `filter`, a Milvus-style
    expression, if given). Give it a `Client`, an `AsyncClient`, or both (`connect` makes both); with only
    one, the other kind of call runs it in a thread (sync) or is refused (async client, sync call)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: str
    top_k: int = 5
    filter: str | None = None
    client: Client | None = None
    async_client: AsyncClient | None = None

    @classmethod
    def connect(cls, kb: str, *, base_url: str | None = None, api_key: str | None = None,
                **fields: Any) -> DocvecRetriever:
        return cls(kb=kb, client=Client(base_url, api_key), async_client=AsyncClient(base_url, api_key), **fields)

    def _documents(self, hits: list[Hit]) -> list[Document]:
        return [Document(page_content=hit.text, metadata=hit_metadata(self.kb, hit), id=hit.chunk_id) for hit in hits]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        if self.client is None:
            raise ValueError("this DocvecRetriever has only an AsyncClient: use ainvoke, or give it client=Client(...)")
        return self._documents(self.client.search(self.kb, query, top_k=self.top_k, filter=self.filter))

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        if self.async_client is not None:
            hits = await self.async_client.search(self.kb, query, top_k=self.top_k, filter=self.filter)
        elif self.client is not None:
            hits = await asyncio.to_thread(self.client.search, self.kb, query, top_k=self.top_k, filter=self.filter)
        else:
            raise ValueError("DocvecRetriever needs client=Client(...) or async_client=AsyncClient(...)")
        return self._documents(hits)
