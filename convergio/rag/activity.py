"""Temporal activities of knowledge and memory: retrieve a step's context, remember a step's output.

Retrieved text is untrusted (a document can carry an indirect prompt injection), so every
hit is screened by the security guardian on the ``context`` surface before the agent sees
it: a hit the template's policy would block or hold for approval is left out (and shows
up in the run's security findings); a redacted one is passed on redacted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool
from temporalio import activity
from temporalio.exceptions import ApplicationError

from convergio.observability.tracing import span
from convergio.rag.context import build_context
from convergio.rag.embeddings import EmbeddingError, build_embedder
from convergio.rag.models import (
    Hit,
    KnowledgeContext,
    KnowledgeRequest,
    MemoryIn,
    MemoryStored,
    RetrievalQuery,
)
from convergio.rag.store import KnowledgeStore
from convergio.security.activity import ScreenInput, screen_and_record
from convergio.security.classifier import build_classifier
from convergio.settings import Settings


class KnowledgeActivities:
    def __init__(self, settings: Settings, pool: AsyncConnectionPool, redis: Any) -> None:
        self._settings = settings
        self._pool = pool
        self._redis = redis
        self._store: KnowledgeStore | None = None
        self._classifier = build_classifier(settings)  # the guardian's optional second layer

    def activities(self) -> list[Callable[..., Any]]:
        """What the worker registers."""
        return [self.retrieve_knowledge, self.remember_step]

    @property
    def store(self) -> KnowledgeStore:
        # Built on first use: a worker that never retrieves never loads the embedding model.
        if self._store is None:
            self._store = KnowledgeStore(self._pool, build_embedder(self._settings, self._redis), self._settings)
        return self._store

    @activity.defn(name="retrieve_knowledge")
    async def retrieve_knowledge(self, request: KnowledgeRequest) -> KnowledgeContext:
        try:
            return await self._retrieve(request)
        except EmbeddingError as exc:  # a missing model or key does not heal by retrying
            raise ApplicationError(str(exc), type="EmbeddingError", non_retryable=True) from exc

    async def _retrieve(self, request: KnowledgeRequest) -> KnowledgeContext:
        top_k = request.top_k or self._settings.rag_top_k
        with span("rag.retrieve", tenant=request.tenant, top_k=top_k, step=request.step_id,
                  workflow_id=request.workflow_id) as current:
            started = time.monotonic()
            vector = (await self.store.embedder.embed([request.query]))[0]
            hits = await self.store.search_vector(
                RetrievalQuery(
                    tenant=request.tenant, query=request.query, top_k=top_k, filters=request.filters,
                    workflow_id=request.workflow_id if request.memories else None,
                    exclude_steps=[request.step_id, *request.exclude_steps], include_knowledge=request.knowledge,
                ),
                vector,
            )
            context = await self._screened_context(request, hits)
            current.set_attributes({
                "hits": len(hits), "sources": len(context.sources), "withheld": context.withheld,
                "tokens": context.tokens, "ms": round((time.monotonic() - started) * 1000, 3),
            })
            return context

    async def _screened_context(self, request: KnowledgeRequest, hits: list[Hit]) -> KnowledgeContext:
        findings = []
        kept: list[Hit] = []
        for hit in hits:
            if request.security is None:
                kept.append(hit)
                continue
            screened = await screen_and_record(
                self._pool,
                ScreenInput(workflow_id=request.workflow_id, step_id=request.step_id, surface="context",
                            tenant=request.tenant, text=hit.content, policy=request.security),
                self._classifier,
            )
            if screened.verdict.decision != "allow":
                findings.append(screened.finding("context", request.step_id))
            if screened.action in ("block", "approval") or screened.text_after is None:
                continue
            kept.append(hit.model_copy(update={"content": screened.text_after}))
        text, sources, tokens = build_context(kept, request.max_tokens or self._settings.rag_context_tokens)
        return KnowledgeContext(text=text, sources=sources, tokens=tokens, withheld=len(hits) - len(kept),
                                findings=findings)

    @activity.defn(name="remember_step")
    async def remember_step(self, memory: MemoryIn) -> MemoryStored:
        with span("rag.remember", tenant=memory.tenant, step=memory.step_id, workflow_id=memory.workflow_id):
            try:
                return MemoryStored(stored=await self.store.remember(memory))
            except EmbeddingError as exc:
                raise ApplicationError(str(exc), type="EmbeddingError", non_retryable=True) from exc
