"""Knowledge routes: add documents to a tenant's knowledge base, list them, search them.

The tenant comes from the ``tenant_of`` dependency (a ``tenant`` query parameter, default
``default``); an authenticated API overrides that dependency with the caller's tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from convergio.rag.embeddings import EmbeddingError, build_embedder
from convergio.rag.models import (
    MAX_METADATA_BYTES,
    TENANT_PATTERN,
    DocumentIn,
    Hit,
    IngestResult,
    RetrievalQuery,
    DocumentMetadata,
)
from convergio.rag.readers import CONTENT_TYPES, DocumentError, parse_text
from convergio.rag.store import KnowledgeStore
from convergio.settings import Settings

router = APIRouter(tags=["knowledge"])


def tenant_of(
    tenant: Annotated[
        str, Query(pattern=TENANT_PATTERN, description="Whose knowledge base.", examples=["acme"])
    ] = "default",
) -> str:
    """The tenant of the request; swapped for the authenticated caller's tenant by the auth layer."""
    return tenant


def knowledge_store(request: Request) -> KnowledgeStore:
    """One store (and embedder) per app, built on first use."""
    store = getattr(request.app.state, "knowledge_store", None)
    if store is None:
        settings: Settings = request.app.state.settings
        try:
            embedder = build_embedder(settings, request.app.state.redis)
        except EmbeddingError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"embeddings: {exc}") from None
        store = KnowledgeStore(request.app.state.db, embedder, settings)
        request.app.state.knowledge_store = store
    return store


@contextmanager
def embeddings_available() -> Iterator[None]:
    """A missing or corrupt model surfaces on the first embedding (the files load lazily): 503, not 500."""
    try:
        yield
    except EmbeddingError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"embeddings: {exc}") from None


TenantDep = Annotated[str, Depends(tenant_of)]
StoreDep = Annotated[KnowledgeStore, Depends(knowledge_store)]


class KnowledgeUpload(BaseModel):
    """One document as text; Markdown may carry front matter (title, importance, metadata)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "source": "market-report-2026.md",
            "text": "---\ntitle: Market report\nimportance: 0.8\n---\n# Market\nGermany has 12,000 mid-market manufacturers.",
            "content_type": "text/markdown",
        }]},
    )

    source: str = Field(min_length=1, max_length=500, examples=["market-report-2026.md"])
    text: str = Field(examples=["Germany has about 12,000 mid-market manufacturers."])
    content_type: str = Field(
        default="text/markdown", description="text/plain, text/markdown or text/html.", examples=["text/markdown"]
    )
    title: str = Field(default="", max_length=500)
    importance: float | None = Field(default=None, ge=0, le=1, description="Unset: front matter, else 0.5.")
    metadata: DocumentMetadata = Field(
        default_factory=dict,
        description=f"Stored with every chunk: at most {MAX_METADATA_BYTES} bytes of JSON.",
    )


class DocumentSummary(BaseModel):
    id: int
    source: str
    title: str
    importance: float
    chunks: int
    embedding_model: str = Field(description="Its chunks' vector space; search reads the current model's.")
    metadata: dict[str, Any]
    created_at: datetime


class SearchResult(BaseModel):
    query: str
    hits: list[Hit]


@router.post(
    "/knowledge",
    status_code=status.HTTP_201_CREATED,
    response_model=IngestResult,
    summary="Add a document to the knowledge base",
    responses={
        201: {"content": {"application/json": {"example": {
            "source": "market-report-2026.md", "document_id": 42, "duplicate": False, "chunks_added": 3,
            "chunks_skipped": 0}}}},
        413: {"description": "The document is larger than CONVERGIO_KNOWLEDGE_MAX_CHARS"},
        415: {"description": "Unsupported content type"},
        422: {"description": "Empty or malformed document, or metadata over 16 KB of JSON"},
        503: {"description": "The embedding model is missing or misconfigured, or a server is unreachable"},
    },
)
async def add_document(upload: KnowledgeUpload, tenant: TenantDep, store: StoreDep) -> IngestResult:
    kind = CONTENT_TYPES.get(upload.content_type.split(";")[0].strip().lower())
    if kind is None or kind == "pdf":
        supported = ", ".join(t for t, k in CONTENT_TYPES.items() if k != "pdf")
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"content_type '{upload.content_type}' is not supported; use one of: {supported}",
        )
    limit = store.settings.knowledge_max_chars
    if len(upload.text) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{upload.source}: {len(upload.text)} characters, more than the {limit} allowed",
        )
    try:
        read = parse_text(upload.text, kind, upload.source)
    except DocumentError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if not read.text.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{upload.source}: the document is empty")
    importance = upload.importance if upload.importance is not None else (
        read.importance if read.importance is not None else 0.5
    )
    try:
        document = DocumentIn(
            tenant=tenant, source=upload.source, title=upload.title or read.title, text=read.text,
            importance=importance, metadata={**read.metadata, **upload.metadata},
        )
    except ValidationError as exc:  # e.g. front matter metadata that, with the body's, is too large
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{upload.source}: {problems}") from None
    with embeddings_available():
        return await store.ingest(document)


@router.get(
    "/knowledge",
    response_model=list[DocumentSummary],
    summary="List the knowledge base's documents",
    responses={200: {"content": {"application/json": {"example": [{
        "id": 42, "source": "market-report-2026.md", "title": "Market report", "importance": 0.8, "chunks": 3,
        "embedding_model": "all-MiniLM-L6-v2-onnx-int8", "metadata": {"topic": "market"},
        "created_at": "2026-11-24T09:30:00Z"}]}}}},
)
async def list_documents(
    tenant: TenantDep, store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000, examples=[100])] = 100
) -> list[dict[str, Any]]:
    return await store.documents(tenant, limit)


@router.get(
    "/knowledge/search",
    response_model=SearchResult,
    summary="Search with the retrieval scoring",
    responses={200: {"content": {"application/json": {"example": {"query": "German manufacturers", "hits": [{
        "kind": "chunk", "id": 7, "source": "market-report-2026.md",
        "content": "Germany has 12,000 mid-market manufacturers.", "relevance": 0.71, "importance": 0.8,
        "recency": 0.98, "score": 0.77, "created_at": "2026-11-24T09:30:00Z", "metadata": {}}]}}}},
        503: {"description": "The embedding model is missing or misconfigured, or a server is unreachable"}},
)
async def search(
    tenant: TenantDep,
    store: StoreDep,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="What to look for.",
                            examples=["German manufacturers"])],
    top_k: Annotated[int, Query(ge=1, le=50, examples=[5])] = 5,
) -> SearchResult:
    with embeddings_available():
        hits = await store.search(RetrievalQuery(tenant=tenant, query=q, top_k=top_k))
    return SearchResult(query=q, hits=hits)
