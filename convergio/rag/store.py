"""Knowledge and memory in PostgreSQL + pgvector: ingestion with de-duplication, scored retrieval.

Retrieval ranks in SQL with the reference scoring::

    final = relevance * w_r + importance * w_i + recency * w_t

relevance is the cosine similarity (``1 - (embedding <=> query)``, floored at 0), importance
is the chunk's (or memory's) own 0..1 weight and recency decays exponentially with a
half-life: ``0.5 ^ (age / half_life)``. Candidates come from the HNSW index (cosine
distance, filtered by tenant, model and metadata with pgvector's iterative scan), the
run's memories are scored exactly, and the union is ordered by the final score.

De-duplication is per embedding model, like retrieval: after ``CONVERGIO_EMBEDDING_MODEL``
changes, re-ingesting a document embeds it again in the new model's vector space (the old
model's rows are never compared with the new model's queries).

A chunk is stored once, with the source, metadata and importance of the document that brought it
first; later documents that contain it with other metadata are recorded in
``knowledge_shared_chunks`` (with the same metadata, a filter matching them matches the chunk
itself). Metadata filters match a chunk when any of its documents matches; a hit found through a
later document is that document's: its source, metadata, importance and age.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from convergio.observability.tracing import span
from convergio.rag.chunking import chunk_text
from convergio.rag.embeddings import Embedder, content_hash, embedding_window, vector_literal
from convergio.rag.models import DocumentIn, Hit, IngestResult, MemoryIn, RetrievalQuery, Weights
from convergio.settings import Settings

# At least this many nearest candidates are re-ranked by the final score.
MIN_CANDIDATES = 40
CANDIDATES_PER_HIT = 4

SEARCH_SQL = """
WITH chunk_hits AS (
    SELECT 'chunk' AS kind, id, source, content, importance, created_at, metadata,
           embedding <=> %(q)s::vector AS distance
    FROM knowledge_chunks
    WHERE %(knowledge)s AND tenant = %(tenant)s AND embedding_model = %(model)s
      AND metadata @> %(filters)s::jsonb
    ORDER BY embedding <=> %(q)s::vector
    LIMIT %(candidates)s
), shared_hits AS (
    -- Chunks whose own (first) document does not match the filters but a later one containing them
    -- does: shown as that document's (the earliest matching), with its source, metadata, importance
    -- and age. Disjoint from chunk_hits (NOT c.metadata @> filters); the tenant and model of c are
    -- checked again so that a wrong row of knowledge_shared_chunks can never leak another's chunk.
    SELECT 'chunk' AS kind, c.id, shared.source, c.content, shared.importance, shared.created_at,
           shared.metadata, c.embedding <=> %(q)s::vector AS distance
    FROM (
        SELECT DISTINCT ON (s.chunk_id) s.chunk_id, m.source, m.importance, m.created_at, m.metadata
        FROM knowledge_documents AS m JOIN knowledge_shared_chunks AS s ON s.document_id = m.id
        WHERE %(knowledge)s AND %(filters)s::jsonb <> '{}'::jsonb  -- else chunk_hits has them all
          AND m.tenant = %(tenant)s AND m.embedding_model = %(model)s AND m.metadata @> %(filters)s::jsonb
        ORDER BY s.chunk_id, m.id
    ) AS shared
    JOIN knowledge_chunks AS c ON c.id = shared.chunk_id
    WHERE c.tenant = %(tenant)s AND c.embedding_model = %(model)s AND NOT c.metadata @> %(filters)s::jsonb
    ORDER BY distance
    LIMIT %(candidates)s
), memory_hits AS (
    SELECT 'memory' AS kind, id, 'step ' || step_id AS source, content, importance, created_at, metadata,
           embedding <=> %(q)s::vector AS distance
    FROM memories
    WHERE tenant = %(tenant)s AND workflow_id = %(workflow_id)s AND embedding_model = %(model)s
      AND NOT (step_id = ANY(%(exclude)s::text[]))
), scored AS (
    SELECT kind, id, source, content, importance::float8 AS importance, created_at, metadata,
           greatest(0.0, 1.0 - distance) AS relevance,
           power(0.5, greatest(0.0, extract(epoch FROM (coalesce(%(as_of)s::timestamptz, now()) - created_at))::float8)
                      / %(half_life_s)s) AS recency
    FROM (
        SELECT * FROM chunk_hits UNION ALL SELECT * FROM shared_hits UNION ALL SELECT * FROM memory_hits
    ) AS hits
)
SELECT kind, id, source, content, importance, created_at, metadata, relevance, recency,
       relevance * %(w_r)s + importance * %(w_i)s + recency * %(w_t)s AS score
FROM scored
ORDER BY score DESC, id
LIMIT %(top_k)s
"""


def default_weights(settings: Settings) -> Weights:
    return Weights(
        relevance=settings.rag_weight_relevance,
        importance=settings.rag_weight_importance,
        recency=settings.rag_weight_recency,
    )


def search_params(
    query: RetrievalQuery, vector: list[float], model: str, settings: Settings
) -> dict[str, Any]:
    """The parameters of ``SEARCH_SQL`` (also used by the benchmark, so it measures this query)."""
    weights = query.weights or default_weights(settings)
    half_life = query.half_life_hours or settings.rag_recency_half_life_hours
    return {
        "q": vector_literal(vector),
        "knowledge": query.include_knowledge,
        "tenant": query.tenant,
        "model": model,
        "filters": json.dumps(query.filters),
        "candidates": max(MIN_CANDIDATES, query.top_k * CANDIDATES_PER_HIT),
        "workflow_id": query.workflow_id,
        "exclude": query.exclude_steps,
        "as_of": query.as_of,
        "half_life_s": half_life * 3600.0,
        "w_r": weights.relevance,
        "w_i": weights.importance,
        "w_t": weights.recency,
        "top_k": query.top_k,
    }


async def prepare_search(conn: Any, ef_search: int, candidates: int) -> None:
    """Per-transaction HNSW knobs: enough candidates, and keep scanning past filtered-out rows."""
    await conn.execute(
        "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)",
        (str(int(max(ef_search, candidates))),),
    )


async def run_search(conn: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """``SEARCH_SQL`` inside a ``prepare_search`` transaction.

    Never a prepared statement: a generic plan cannot see the query vector and LIMIT, and
    PostgreSQL then prefers an exact scan over the HNSW index (ten times slower at 20,000 rows).
    """
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(SEARCH_SQL, params, prepare=False)
    return list(await cursor.fetchall())


class KnowledgeStore:
    """Ingestion, memory and retrieval over one connection pool and one embedder."""

    def __init__(self, pool: AsyncConnectionPool, embedder: Embedder, settings: Settings) -> None:
        self._pool = pool
        self.embedder = embedder
        self.settings = settings

    # ------------------------------------------------------------------ ingestion
    async def ingest(self, doc: DocumentIn) -> IngestResult:
        """Store a document's new chunks; text the tenant already has is skipped (by hash)."""
        with span("rag.ingest", tenant=doc.tenant, source=doc.source) as current:
            started = time.monotonic()
            result = await self._ingest(doc)
            current.set_attributes({"chunks_added": result.chunks_added, "chunks_skipped": result.chunks_skipped,
                                    "duplicate": result.duplicate, "ms": round((time.monotonic() - started) * 1000, 3)})
            return result

    async def _ingest(self, doc: DocumentIn) -> IngestResult:
        if len(doc.text) > self.settings.knowledge_max_chars:
            raise ValueError(
                f"{doc.source}: {len(doc.text)} characters, more than the {self.settings.knowledge_max_chars} allowed"
            )
        doc_hash = content_hash(doc.text.strip())
        model = self.embedder.model
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT id FROM knowledge_documents"
                " WHERE tenant = %s AND embedding_model = %s AND content_hash = %s",
                (doc.tenant, model, doc_hash),
            )
            if await cursor.fetchone():
                return IngestResult(source=doc.source, document_id=None, duplicate=True, chunks_added=0,
                                    chunks_skipped=0)
        # In a thread: a large document takes seconds to cut, and the API's event loop must not wait.
        chunks = await asyncio.to_thread(chunk_text, doc.text, self.settings.rag_chunk_tokens,
                                         self.settings.rag_chunk_overlap, embedding_window(self.embedder))
        unique = {content_hash(c.text): c for c in reversed(chunks)}  # first occurrence wins
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT content_hash FROM knowledge_chunks"
                " WHERE tenant = %s AND embedding_model = %s AND content_hash = ANY(%s)",
                (doc.tenant, model, list(unique)),
            )
            known = {row[0] for row in await cursor.fetchall()}
        # Sorted by hash: concurrent ingestions sharing chunks take their row locks in one order
        # (in document order, two documents with shared chunks in opposite orders deadlock).
        fresh = sorted(((h, c) for h, c in unique.items() if h not in known), key=lambda pair: pair[0])
        vectors = await self.embedder.embed([c.text for _, c in fresh])
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "INSERT INTO knowledge_documents (tenant, source, title, content_hash, embedding_model,"
                " importance, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)"
                " ON CONFLICT (tenant, embedding_model, content_hash) DO NOTHING RETURNING id",
                (doc.tenant, doc.source, doc.title, doc_hash, model, doc.importance,
                 json.dumps(doc.metadata)),
            )
            row = await cursor.fetchone()
            if row is None:  # another ingestion of the same text won the race
                return IngestResult(source=doc.source, document_id=None, duplicate=True, chunks_added=0,
                                    chunks_skipped=0)
            document_id = int(row[0])
            added = 0
            if fresh:
                cursor = await conn.execute(
                    "INSERT INTO knowledge_chunks (document_id, tenant, source, ordinal, content, content_hash,"
                    " tokens, embedding, embedding_model, importance, metadata)"
                    " SELECT %(doc)s, %(tenant)s, %(source)s, u.ordinal, u.content, u.hash, u.tokens,"
                    " u.embedding::vector, %(model)s, %(importance)s, %(metadata)s::jsonb"
                    " FROM unnest(%(ordinals)s::int[], %(contents)s::text[], %(hashes)s::text[],"
                    " %(tokens)s::int[], %(embeddings)s::text[]) AS u(ordinal, content, hash, tokens, embedding)"
                    " ORDER BY u.hash"
                    " ON CONFLICT (tenant, embedding_model, content_hash) DO NOTHING RETURNING id",
                    {
                        "doc": document_id, "tenant": doc.tenant, "source": doc.source,
                        "model": model, "importance": doc.importance,
                        "metadata": json.dumps(doc.metadata),
                        "ordinals": [c.ordinal for _, c in fresh], "contents": [c.text for _, c in fresh],
                        "hashes": [h for h, _ in fresh], "tokens": [c.tokens for _, c in fresh],
                        "embeddings": [vector_literal(v) for v in vectors],
                    },
                )
                added = len(await cursor.fetchall())
            # The chunks another document stored first are recorded as this one's too (one a concurrent
            # ingestion just stored is seen: this transaction waited for it). Not when that document's
            # metadata is this one's: a filter matching this one matches the chunk itself.
            await conn.execute(
                "INSERT INTO knowledge_shared_chunks (chunk_id, document_id)"
                " SELECT id, %(doc)s FROM knowledge_chunks"
                " WHERE tenant = %(tenant)s AND embedding_model = %(model)s AND document_id <> %(doc)s"
                " AND content_hash = ANY(%(hashes)s) AND metadata <> %(metadata)s::jsonb",
                {"doc": document_id, "tenant": doc.tenant, "model": model, "hashes": list(unique),
                 "metadata": json.dumps(doc.metadata)},
            )
            await conn.execute("UPDATE knowledge_documents SET chunks = %s WHERE id = %s", (added, document_id))
        return IngestResult(source=doc.source, document_id=document_id, duplicate=False, chunks_added=added,
                            chunks_skipped=len(chunks) - added)

    async def documents(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cursor = await conn.cursor(row_factory=dict_row).execute(
                "SELECT id, source, title, importance::float8 AS importance, chunks, embedding_model,"
                " metadata, created_at"
                " FROM knowledge_documents WHERE tenant = %s ORDER BY created_at DESC, id DESC LIMIT %s",
                (tenant, limit),
            )
            return list(await cursor.fetchall())

    # ------------------------------------------------------------------ memory
    async def remember(self, memory: MemoryIn) -> bool:
        """Store a memory once per embedding model (a retried activity finds it already there; a
        worker on a new model stores it again, searchable); True when new. A step's output
        replaces the one stored for the step before (a person edited it, a rework or a loop's
        next round changed it): only the version that stands can be retrieved."""
        vector = (await self.embedder.embed([memory.content]))[0]
        async with self._pool.connection() as conn:  # autocommit: the statement is its own transaction
            cursor = await conn.execute(
                "WITH superseded AS (DELETE FROM memories WHERE %s AND workflow_id = %s AND step_id = %s"
                " AND kind = %s AND embedding_model = %s AND content_hash <> %s)"
                " INSERT INTO memories (tenant, workflow_id, step_id, kind, agent, content, content_hash, embedding,"
                " embedding_model, importance, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::vector, %s, %s,"
                " %s::jsonb) ON CONFLICT (workflow_id, step_id, kind, embedding_model, content_hash)"
                " DO NOTHING RETURNING id",
                (memory.kind == "step_output", memory.workflow_id, memory.step_id, memory.kind,
                 self.embedder.model, content_hash(memory.content),
                 memory.tenant, memory.workflow_id, memory.step_id, memory.kind, memory.agent, memory.content,
                 content_hash(memory.content), vector_literal(vector), self.embedder.model, memory.importance,
                 json.dumps(memory.metadata)),
            )
            return await cursor.fetchone() is not None

    # ------------------------------------------------------------------ retrieval
    async def search(self, query: RetrievalQuery) -> list[Hit]:
        vector = (await self.embedder.embed([query.query]))[0]
        return await self.search_vector(query, vector)

    async def search_vector(self, query: RetrievalQuery, vector: list[float]) -> list[Hit]:
        params = search_params(query, vector, self.embedder.model, self.settings)
        async with self._pool.connection() as conn, conn.transaction():
            await prepare_search(conn, self.settings.rag_ef_search, params["candidates"])
            rows = await run_search(conn, params)
        return [Hit.model_validate(row) for row in rows]
