"""The LangChain and LlamaIndex retrievers against a live API: a query returns the knowledge base's
closest chunks as each framework's own types, through sync and async calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from docvec import AsyncClient, Client
from tests.api.live import LiveApi
from tests.docvec.conftest import write_corpus

QUERY = "Knead the dough, let it rise overnight, bake it hot."
WAIT_S = 60.0


@pytest.fixture
def ingested(live_api: LiveApi, api_key: str, tmp_path: Path) -> str:
    with Client(live_api.url, api_key) as docvec:
        result = docvec.ingest("notes", write_corpus(tmp_path / "corpus"), wait=True, timeout_s=WAIT_S)
        assert result.failed == {} and len(result.tasks) == 3
    return "notes"


async def test_the_langchain_retriever_returns_documents_with_their_sources(
        live_api: LiveApi, api_key: str, ingested: str) -> None:
    langchain = pytest.importorskip("docvec.langchain", reason="langchain-core is the extra docvec[langchain]")
    Document = pytest.importorskip("langchain_core.documents").Document
    retriever = langchain.DocvecRetriever.connect(ingested, base_url=live_api.url, api_key=api_key, top_k=2)
    try:
        docs = await retriever.ainvoke(QUERY)
        assert all(isinstance(d, Document) for d in docs) and len(docs) == 2
        best = docs[0]
        assert best.metadata["filename"] == "bread.md" and "dough" in best.page_content
        assert best.metadata["kb"] == "notes" and best.metadata["score"] >= docs[1].metadata["score"]
        assert best.id == best.metadata["chunk_id"]
        with Client(live_api.url, api_key) as client:  # the sync path, on a Client alone
            sync_docs = langchain.DocvecRetriever(kb=ingested, client=client, top_k=2).invoke(QUERY)
        assert [d.page_content for d in sync_docs] == [d.page_content for d in docs]
        only_async = langchain.DocvecRetriever(kb=ingested, async_client=retriever.async_client)
        with pytest.raises(ValueError, match="use ainvoke"):
            only_async.invoke(QUERY)
        filtered = langchain.DocvecRetriever(kb=ingested, client=retriever.client, top_k=3,
                                             filter='filename == "tides.md"').invoke(QUERY)
        assert {d.metadata["filename"] for d in filtered} == {"tides.md"}
    finally:
        assert retriever.client is not None and retriever.async_client is not None
        retriever.client.close()
        await retriever.async_client.aclose()


async def test_the_llamaindex_retriever_returns_scored_nodes(live_api: LiveApi, api_key: str, ingested: str) -> None:
    llamaindex = pytest.importorskip("docvec.llamaindex", reason="llama-index-core is the extra docvec[llamaindex]")
    schema = pytest.importorskip("llama_index.core.schema")
    async with AsyncClient(live_api.url, api_key) as aclient:
        with Client(live_api.url, api_key) as client:
            retriever = llamaindex.DocvecRetriever(client, ingested, top_k=2, async_client=aclient)
            nodes = retriever.retrieve(QUERY)
            assert all(isinstance(n, schema.NodeWithScore) for n in nodes) and len(nodes) == 2
            best = nodes[0]
            assert best.node.metadata["filename"] == "bread.md" and "dough" in best.node.get_content()
            assert best.score is not None and nodes[1].score is not None and best.score >= nodes[1].score
            anodes = await retriever.aretrieve(QUERY)
            assert [n.node.node_id for n in anodes] == [n.node.node_id for n in nodes]
            threaded = await llamaindex.DocvecRetriever(client, ingested, top_k=2).aretrieve(QUERY)
            assert [n.node.node_id for n in threaded] == [n.node.node_id for n in nodes]
    with pytest.raises(ValueError, match="needs a Client"):
        llamaindex.DocvecRetriever(None, ingested)
