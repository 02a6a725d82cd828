"""Payloads of ingestion, retrieval and memory, as Pydantic models (API, CLI and activities)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from convergio.contracts import SecurityFinding
from convergio.security.policy import SecurityPolicy

TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Metadata filters match by containment (`metadata @> filters`): flat string values only.
Filters = dict[str, str | int | float | bool]
MAX_TITLE_CHARS = 500
# Metadata is copied into every chunk row of its document: kept small (JSON, UTF-8 bytes).
MAX_METADATA_BYTES = 16_384


def without_nul(value: Any) -> Any:
    """``value`` with NUL characters removed from every string in it (keys too).

    PostgreSQL text and jsonb cannot hold NUL; a stray one (PDF text, a binary-ish .txt)
    must not make the whole document unstorable.
    """
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def shorten_title(title: str, limit: int = MAX_TITLE_CHARS) -> str:
    """One line of at most ``limit`` characters: a long title is cut (with an ellipsis), never refused."""
    flat = " ".join(title.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _small_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata is stored with every chunk: more than MAX_METADATA_BYTES of JSON is refused, and
    so is a number JSON cannot hold (NaN, infinity: YAML's ``.nan``, JSON's ``1e999``), which
    PostgreSQL's jsonb would refuse with a confusing error."""
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        raise ValueError("metadata holds a number JSON cannot represent (NaN or infinity)") from None
    size = len(encoded.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes of JSON, more than the {MAX_METADATA_BYTES} allowed")
    return metadata


DocumentMetadata = Annotated[dict[str, Any], AfterValidator(_small_metadata)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentIn(Model):
    """One document to ingest: already plain text (readers turn files into this)."""

    tenant: str = Field(default="default", pattern=TENANT_PATTERN)
    source: str = Field(min_length=1, max_length=500, description="Where it came from: a file name or a URL.")
    title: str = Field(default="", max_length=MAX_TITLE_CHARS, description="Longer titles are shortened.")
    text: str = Field(description="The document's text.")
    importance: float = Field(default=0.5, ge=0, le=1, description="How much its chunks weigh in retrieval.")
    metadata: DocumentMetadata = Field(
        default_factory=dict,
        description=f"Free JSON (at most {MAX_METADATA_BYTES} bytes); retrieval can filter on it.",
    )

    @field_validator("source", "text", "metadata", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return without_nul(value)

    @field_validator("title", mode="before")
    @classmethod
    def _short_title(cls, value: Any) -> Any:
        # Titles come from <title>, front matter or file names: too long is not the user's error.
        return shorten_title(without_nul(value)) if isinstance(value, str) else value

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the document is empty")
        return value


class IngestResult(Model):
    source: str
    document_id: int | None = Field(description="None when the whole document was already stored.")
    duplicate: bool = Field(
        description="The same document (same text) was already ingested for the tenant, with this embedding"
        " model."
    )
    chunks_added: int = Field(ge=0)
    chunks_skipped: int = Field(
        ge=0, description="Chunks whose text the tenant already had (with the same embedding model)."
    )


class Weights(Model):
    relevance: float = Field(ge=0, le=1)
    importance: float = Field(ge=0, le=1)
    recency: float = Field(ge=0, le=1)


class RetrievalQuery(Model):
    """What to look for, for whom; weights and half-life default to the settings."""

    tenant: str = Field(default="default", pattern=TENANT_PATTERN)
    query: str = Field(min_length=1, max_length=10_000)
    top_k: int = Field(default=5, ge=1, le=100)
    filters: Filters = Field(default_factory=dict)
    weights: Weights | None = None
    half_life_hours: float | None = Field(default=None, gt=0)
    workflow_id: str | None = Field(default=None, description="Also search this run's memories.")
    exclude_steps: list[str] = Field(default_factory=list, description="Memories of these steps are left out.")
    include_knowledge: bool = True
    as_of: datetime | None = Field(default=None, description="Recency is measured from here; unset: now.")


class Hit(Model):
    """One retrieved chunk or memory and how it scored."""

    kind: Literal["chunk", "memory"]
    id: int
    source: str
    content: str
    relevance: float
    importance: float
    recency: float
    score: float
    created_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)


class SourceRef(Model):
    """A numbered source an agent was given (and may cite as ``[source: S1]``)."""

    marker: str
    kind: Literal["chunk", "memory"]
    source: str
    score: float
    excerpt: str = ""


class KnowledgeRequest(Model):
    """A step's retrieval, resolved by the workflow (placeholders filled in)."""

    workflow_id: str
    step_id: str
    tenant: str = Field(default="default", pattern=TENANT_PATTERN)
    query: str = Field(min_length=1, max_length=10_000)
    top_k: int | None = Field(default=None, ge=1, le=50)
    filters: Filters = Field(default_factory=dict)
    memories: bool = True
    knowledge: bool = True
    exclude_steps: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(default=None, ge=50, le=50_000)
    security: SecurityPolicy | None = Field(default=None, description="Unset: retrieved text is not screened.")


class KnowledgeContext(Model):
    """What the agent is given: numbered sources as one context message, and what was held back."""

    text: str = Field(description="The context message; empty when nothing was found.")
    sources: list[SourceRef] = Field(default_factory=list)
    tokens: int = Field(default=0, ge=0)
    withheld: int = Field(default=0, ge=0, description="Hits the security guardian kept from the agent.")
    findings: list[SecurityFinding] = Field(default_factory=list)


class MemoryIn(Model):
    """A completed step's output (or a fact) to remember for later steps of the same run."""

    tenant: str = Field(default="default", pattern=TENANT_PATTERN)
    workflow_id: str
    step_id: str
    kind: Literal["step_output", "fact"] = "step_output"
    agent: str = ""
    content: str = Field(min_length=1)
    importance: float = Field(default=0.5, ge=0, le=1)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("step_id", "agent", "content", "metadata", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return without_nul(value)


class MemoryStored(Model):
    stored: bool
