"""Ingest files (or folders of them) into a tenant's knowledge base, reporting progress per file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg_pool import PoolTimeout
from pydantic import ValidationError

from convergio.rag.embeddings import EmbeddingError
from convergio.rag.models import DocumentIn, IngestResult
from convergio.rag.readers import SUPPORTED_SUFFIXES, DocumentError, read_path
from convergio.rag.store import KnowledgeStore
from convergio.settings import Settings

log = logging.getLogger(__name__)


def _stops_batch(exc: Exception) -> bool:
    """Not about one file (no embedding model, no database): every other file would fail the same way."""
    if isinstance(exc, (EmbeddingError, PoolTimeout)):
        return True
    # Connection lost (no SQLSTATE, class 08) or the server shutting down (57P): a statement
    # timeout or a deadlock (also OperationalError) belongs to the file that hit it.
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))
    )


@dataclass
class IngestReport:
    results: list[IngestResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def chunks_added(self) -> int:
        return sum(r.chunks_added for r in self.results)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, and the supported files inside given folders (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            files.append(path)
    return files


def document_from_path(path: Path, tenant: str, importance: float | None = None, source: str | None = None) -> DocumentIn:
    """Read a file into a ``DocumentIn``; raises ``DocumentError`` with the reason."""
    read = read_path(path)
    return DocumentIn(
        tenant=tenant, source=source or path.name, title=read.title or path.stem, text=read.text,
        importance=importance if importance is not None else (read.importance if read.importance is not None else 0.5),
        metadata=read.metadata,
    )


async def ingest_files(
    store: KnowledgeStore,
    files: list[Path],
    tenant: str,
    *,
    importance: float | None = None,
    on_file: Callable[[Path, IngestResult | None, str | None], None] | None = None,
) -> IngestReport:
    """Ingest each file; a file that fails, for whatever reason of its own, is reported (and
    skipped) and the others still go in. A missing embedding model or a lost database stops the batch."""
    report = IngestReport()
    for path in files:
        try:
            document = document_from_path(path, tenant, importance)
            if len(document.text) > store.settings.knowledge_max_chars:
                raise DocumentError(
                    f"{path}: {len(document.text)} characters, more than the "
                    f"{store.settings.knowledge_max_chars} allowed (CONVERGIO_KNOWLEDGE_MAX_CHARS)"
                )
            result = await store.ingest(document)
        except Exception as exc:  # noqa: BLE001 - one file's failure must not end the batch
            if _stops_batch(exc):
                raise
            reason = _reason(path, exc)
            if not isinstance(exc, DocumentError):
                log.info("ingesting %s failed", path, exc_info=True)  # the reason is reported
            report.errors.append(reason)
            if on_file:
                on_file(path, None, reason)
            continue
        report.results.append(result)
        if on_file:
            on_file(path, result, None)
    return report


def _reason(path: Path, exc: Exception) -> str:
    """One line naming the file and what is wrong with it."""
    if isinstance(exc, DocumentError):
        return str(exc)
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        return f"{path}: {problems}"
    if isinstance(exc, psycopg.Error):
        return f"{path}: the database refused the document ({type(exc).__name__}: {exc})"
    return f"{path}: {exc or type(exc).__name__}"


async def ingest_into(
    settings: Settings,
    database_url: str,
    redis_url: str | None,
    files: list[Path],
    tenant: str,
    *,
    importance: float | None = None,
    on_file: Callable[[Path, IngestResult | None, str | None], None] | None = None,
) -> IngestReport:
    """Open a pool (and Redis for the embedding cache, when it answers), migrate, ingest ``files``."""
    import redis.asyncio as aioredis
    from convergio.db.pool import connection_pool
    from redis.exceptions import RedisError

    from convergio.db.migrate import apply_migrations
    from convergio.rag.embeddings import build_embedder

    await apply_migrations(database_url)
    redis = aioredis.Redis.from_url(redis_url) if redis_url else None
    if redis is not None:
        try:
            await redis.ping()
        except (RedisError, OSError):
            await redis.aclose()
            redis = None
    pool = connection_pool(database_url, max_size=2)
    await pool.open(wait=True, timeout=30)
    try:
        store = KnowledgeStore(pool, build_embedder(settings, redis), settings)
        return await ingest_files(store, files, tenant, importance=importance, on_file=on_file)
    finally:
        await pool.close()
        if redis is not None:
            await redis.aclose()
