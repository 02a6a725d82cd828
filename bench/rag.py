"""RAG benchmark: top-10 retrieval latency and recall on pgvector (HNSW), and ingestion throughput.

Run as a file::

    .venv/bin/python bench/rag.py [--quick]

Progress goes to stderr; the LAST line of stdout is one JSON object with ``top10_p50_ms``,
``top10_p95_ms``, ``recall_at_10`` and ``ingest_chunks_per_s`` (and diagnostics).

Everything runs against a throw-away embedded PostgreSQL (pgvector, temp dir, free port)
migrated with the shipped migrations, torn down at the end even on error.

Method
------
1. Corpus. N chunks (100,000; ``--quick``: 20,000) of 384 dimensions are COPYed into
   ``knowledge_chunks`` for one tenant. The vectors are synthetic but shaped like
   sentence embeddings: unit vectors scattered around 2,000 random topic centres (uniform
   random vectors in 384 dimensions are all nearly orthogonal, which no text corpus is).
   Importance is uniform in [0, 1], ages uniform over 90 days. The HNSW index is the
   migration's (``m = 16, ef_construction = 64``, cosine), rebuilt after the COPY as a bulk
   load would; its build time is reported.
2. Latency. Q queries (unit vectors near random corpus points) run through exactly the
   retrieval path the activity uses (``SEARCH_SQL``, ``search_params`` and
   ``prepare_search`` from ``convergio.rag.store``, default weights and half-life,
   ``hnsw.ef_search`` from the settings), one at a time on one connection, timed
   client-side (BEGIN, two SET LOCALs, the query, COMMIT): p50 and p95 in ms. The embedding
   of the query is not in this number; ``server_p50_ms`` is PostgreSQL's own planning +
   execution time of the query (EXPLAIN ANALYZE).
3. Recall@10. The same SQL again with index scans disabled (exact: every row scored) gives
   the true top 10; recall is the mean overlap of the two top-10 lists. ``recall_at_10`` uses
   the default weights (relevance 0.6, importance 0.25, recency 0.15); the diagnostic
   ``recall_at_10_relevance_only`` uses relevance alone (pure nearest neighbours).
   The headline numbers use ``CONVERGIO_RAG_EF_SEARCH``; ``ef_search_sweep`` repeats
   latency and recall for other ``hnsw.ef_search`` values, to show the trade-off.
4. Ingestion. M generated documents (sentences recombined from the sample knowledge base,
   so every chunk is new text) go through ``KnowledgeStore.ingest``: reading, token-aware
   chunking, local int8 MiniLM embeddings on the CPU (no Redis cache, so every chunk is
   really embedded), and the INSERT. ``ingest_chunks_per_s`` = chunks stored / wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from convergio.db.pool import connection_pool

from convergio.db.migrate import apply_migrations
from convergio.knowledge import sample_dir
from convergio.rag.embeddings import DIMENSIONS, LocalEmbedder, vector_literal
from convergio.rag.models import DocumentIn, RetrievalQuery, Weights
from convergio.rag.readers import read_path
from convergio.rag.store import SEARCH_SQL, KnowledgeStore, prepare_search, run_search, search_params
from convergio.settings import Settings
from convergio.stack.postgres_server import EmbeddedPostgres
from convergio.stack.process import free_port

TENANT = "bench"
MODEL = "bench-synthetic-384"
TOPICS = 2_000
SWEEP = (40, 80, 160, 320)  # hnsw.ef_search values also measured (diagnostics)


def log(message: str) -> None:
    print(f"[rag-bench] {message}", file=sys.stderr, flush=True)


def synthetic_vectors(rng: np.random.Generator, count: int, centres: np.ndarray, spread: float) -> np.ndarray:
    topics = rng.integers(0, len(centres), size=count)
    vectors = centres[topics] + rng.normal(0, spread, size=(count, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def load_corpus(url: str, count: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """COPY ``count`` chunks, then rebuild the HNSW index; returns (vectors, copy s, index s)."""
    centres = rng.normal(0, 1, size=(TOPICS, DIMENSIONS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = synthetic_vectors(rng, count, centres, spread=0.045)
    importance = rng.random(count)
    ages = rng.random(count) * 90 * 86_400
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        index_sql = (await (await conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'knowledge_chunks_embedding_hnsw'"
        )).fetchone())[0]
        await conn.execute("DROP INDEX knowledge_chunks_embedding_hnsw")
        document_id = (await (await conn.execute(
            "INSERT INTO knowledge_documents (tenant, source, content_hash) VALUES (%s, 'bench', 'bench') RETURNING id",
            (TENANT,),
        )).fetchone())[0]
        started = time.perf_counter()
        async with conn.cursor() as cursor, cursor.copy(
            "COPY knowledge_chunks (document_id, tenant, source, ordinal, content, content_hash, tokens,"
            " embedding, embedding_model, importance, created_at) FROM STDIN"
        ) as copy:
            for i in range(count):
                await copy.write_row((
                    document_id, TENANT, f"doc-{i // 20}.md", i % 20, f"synthetic chunk {i}", f"h{i}", 50,
                    vector_literal(vectors[i].tolist()), MODEL, float(importance[i]),
                    now - timedelta(seconds=float(ages[i])),
                ))
        copy_s = time.perf_counter() - started
        log(f"copied {count} chunks in {copy_s:.1f}s; building the HNSW index")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        started = time.perf_counter()
        await conn.execute(index_sql)
        index_s = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE knowledge_chunks")
    log(f"index built in {index_s:.1f}s")
    return vectors, copy_s, index_s


async def top10(conn: Any, settings: Settings, vector: np.ndarray, weights: Weights, *, exact: bool) -> list[int]:
    query = RetrievalQuery(tenant=TENANT, query="bench", top_k=10, weights=weights)
    params = search_params(query, vector.tolist(), MODEL, settings)
    async with conn.transaction():
        await prepare_search(conn, settings.rag_ef_search, params["candidates"])
        if exact:
            await conn.execute("SET LOCAL enable_indexscan = off")
            await conn.execute("SET LOCAL enable_bitmapscan = off")
        rows = await run_search(conn, params)
    return [row["id"] for row in rows]


async def measure_queries(url: str, settings: Settings, corpus: np.ndarray, queries: int,
                          rng: np.random.Generator) -> dict[str, Any]:
    picks = corpus[rng.integers(0, len(corpus), size=queries)]
    probes = picks + rng.normal(0, 0.03, size=picks.shape).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    default = Weights(relevance=settings.rag_weight_relevance, importance=settings.rag_weight_importance,
                      recency=settings.rag_weight_recency)
    relevance_only = Weights(relevance=1.0, importance=0.0, recency=0.0)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        plan = await (await conn.execute(
            "EXPLAIN " + SEARCH_SQL,
            search_params(RetrievalQuery(tenant=TENANT, query="x", top_k=10), probes[0].tolist(), MODEL, settings),
        )).fetchall()
        uses_hnsw = any("knowledge_chunks_embedding_hnsw" in row[0] for row in plan)
        await conn.rollback()
        server_ms: list[float] = []
        for vector in probes[:20]:  # the server's own execution time, without the client round trip
            params = search_params(RetrievalQuery(tenant=TENANT, query="x", top_k=10, weights=default),
                                   vector.tolist(), MODEL, settings)
            async with conn.transaction():
                await prepare_search(conn, settings.rag_ef_search, params["candidates"])
                analyzed = await (await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + SEARCH_SQL, params)).fetchone()
            server_ms.append(float(analyzed[0][0]["Execution Time"]) + float(analyzed[0][0]["Planning Time"]))
        truths = [await top10(conn, settings, v, default, exact=True) for v in probes]
        truths_relevance = [await top10(conn, settings, v, relevance_only, exact=True) for v in probes]
        sweep: dict[str, dict[str, float]] = {}
        headline: dict[str, Any] = {}
        for ef in sorted({*SWEEP, settings.rag_ef_search}):
            tuned = settings.model_copy(update={"rag_ef_search": ef})
            for vector in probes[:10]:  # warm-up: caches
                await top10(conn, tuned, vector, default, exact=False)
            latencies: list[float] = []
            recall: list[float] = []
            for vector, truth in zip(probes, truths):
                started = time.perf_counter()
                found = await top10(conn, tuned, vector, default, exact=False)
                latencies.append((time.perf_counter() - started) * 1000)
                recall.append(len(set(found) & set(truth)) / max(len(truth), 1))
            recall_relevance = [
                len(set(await top10(conn, tuned, v, relevance_only, exact=False)) & set(t)) / max(len(t), 1)
                for v, t in zip(probes, truths_relevance)
            ]
            latencies.sort()
            row = {
                "top10_p50_ms": round(statistics.median(latencies), 3),
                "top10_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
                "recall_at_10": round(statistics.mean(recall), 4),
                "recall_at_10_relevance_only": round(statistics.mean(recall_relevance), 4),
            }
            sweep[str(ef)] = row
            log(f"ef_search {ef}: {row}")
            if ef == settings.rag_ef_search:
                headline = row
    return {
        **headline,
        "server_p50_ms": round(statistics.median(server_ms), 3),
        "plan_uses_hnsw": uses_hnsw,
        "queries": queries,
        "ef_search_sweep": sweep,
    }



def generated_documents(count: int, seed: int) -> list[str]:
    sentences = [
        s.strip() + "." for path in sorted(sample_dir().glob("*.md"))
        for s in read_path(path).text.replace("\n", " ").split(". ") if len(s.split()) > 4
    ]
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, 12)) + f" Document {i}." for i in range(count)]


async def measure_ingestion(url: str, settings: Settings, documents: int) -> dict[str, Any]:
    texts = generated_documents(documents, seed=7)
    embedder = LocalEmbedder()
    await embedder.embed(["warm-up: load the model"])
    pool = connection_pool(url, max_size=2)
    await pool.open(wait=True)
    try:
        store = KnowledgeStore(pool, embedder, settings)
        started = time.perf_counter()
        chunks = 0
        for i, text in enumerate(texts):
            result = await store.ingest(DocumentIn(tenant="ingest", source=f"generated-{i}.md", text=text))
            chunks += result.chunks_added
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    log(f"ingested {documents} documents, {chunks} chunks in {elapsed:.1f}s")
    return {"ingest_chunks_per_s": round(chunks / elapsed, 1), "ingest_documents": documents,
            "ingest_chunks": chunks}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    chunks = 20_000 if args.quick else 100_000
    queries = 100 if args.quick else 300
    documents = 30 if args.quick else 100
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory(prefix="convergio-rag-bench-") as folder:
        server = EmbeddedPostgres(Path(folder) / "postgres", port=free_port())
        await server.start()
        try:
            url = server.url()
            await apply_migrations(url)
            corpus, copy_s, index_s = await load_corpus(url, chunks, rng)
            result: dict[str, Any] = {"load_average_1m": round(os.getloadavg()[0], 2), "chunks": chunks, "dimensions": DIMENSIONS, "ef_search": settings.rag_ef_search,
                                      "copy_s": round(copy_s, 2), "index_build_s": round(index_s, 2)}
            result.update(await measure_queries(url, settings, corpus, queries, rng))
            result.update(await measure_ingestion(url, settings, documents))
            return result
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 chunks, fewer queries and documents")
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
