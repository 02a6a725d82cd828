"""All configuration, read once from ``CONVERGIO_*`` environment variables or ``.env``.

An unset server URL means "start the embedded part": the same code runs on one
laptop and against production servers, only these values differ.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# Custom search attributes every Convergio workflow may set; registered on start-up
# so the Temporal Web UI and `temporal workflow list --query` can filter on them.
SEARCH_ATTRIBUTES: dict[str, str] = {
    "ConvergioTemplate": "Keyword",
    "ConvergioStatus": "Keyword",
    "ConvergioTenant": "Keyword",
    "ConvergioPendingGates": "KeywordList",
    "ConvergioCostUsd": "Double",
}


ApiRole = Literal["viewer", "operator", "approver", "admin"]


class ApiKeyEntry(BaseModel):
    """One API key of ``CONVERGIO_API_KEYS``: prefer ``sha256`` (hex of the key) over the key itself."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Who holds the key; recorded as the actor.")
    role: ApiRole
    tenant: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key: SecretStr | None = Field(default=None, min_length=16)
    approves_as: list[str] = Field(default_factory=list, description="Gate roles the holder may decide as.")

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyEntry:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError("give exactly one of 'sha256' and 'key'")
        return self


class Settings(BaseSettings):
    """Convergio settings. Every field maps to ``CONVERGIO_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="CONVERGIO_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Field(
        default=Path(".convergio"),
        description="Where the embedded stack keeps its data (Temporal SQLite, Postgres, Redis).",
    )

    temporal_address: str | None = Field(
        default=None,
        description="host:port of a Temporal frontend. Unset: start the embedded dev server.",
    )
    temporal_namespace: str = Field(default="default", description="Temporal namespace.")
    temporal_task_queue: str = Field(default="convergio", description="Task queue of the worker.")
    temporal_port: int = Field(default=7233, ge=1, le=65535, description="Embedded Temporal gRPC port.")
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535, description="Embedded Temporal Web UI port.")
    temporal_ui_url: str | None = Field(
        default=None,
        description="Base URL of the Temporal Web UI used in links. Unset: the embedded UI.",
    )

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL (with pgvector). Unset: start embedded PostgreSQL.",
    )
    postgres_port: int = Field(default=5433, ge=1, le=65535, description="Embedded PostgreSQL port.")

    redis_url: str | None = Field(
        default=None, description="Redis URL. Unset: start the embedded redis-server."
    )
    redis_port: int = Field(default=6380, ge=1, le=65535, description="Embedded Redis port.")
    event_retention_days: float = Field(
        default=30.0, gt=0, le=3650,
        description="A run's live event stream expires this many days after its last event (Redis memory).",
    )

    model: str = Field(
        default="offline",
        description=(
            "Model provider: offline | openai:<model> | azure:<deployment> | anthropic:<model> "
            "| ollama:<model> | openai-compatible:<base_url>#<model> | local | local:<file.gguf>."
        ),
    )
    local_n_ctx: int = Field(
        default=2048, ge=128, le=131_072,
        description="Context window of the local model, in tokens; longer prompts lose their oldest context.",
    )
    local_max_tokens: int = Field(
        default=400, ge=16, le=8192, description="Longest answer of the local model, in tokens."
    )
    local_threads: int | None = Field(
        default=None, ge=1, le=256, description="CPU threads of the local model. Unset: half the cores."
    )
    run_models: list[str] = Field(
        default_factory=lambda: ["offline"],
        description="Models a run started through the API may ask for (the request's model, a stored "
        "template's budget.downgrade_model) besides CONVERGIO_MODEL, as a JSON list. A model setting names "
        "where prompts and the provider's API key go, so nothing else is accepted from callers.",
    )
    offline_latency_ms: int = Field(
        default=0, ge=0, le=60_000, description="Simulated answer time of the offline model, in milliseconds."
    )
    openai_api_key: str | None = Field(default=None, description="Key for openai: and openai-compatible:.")
    azure_openai_endpoint: str | None = Field(default=None, description="Endpoint for azure:.")
    azure_openai_api_key: str | None = Field(default=None, description="Key for azure:.")
    azure_openai_api_version: str = Field(default="2024-10-21", description="API version for azure:.")
    anthropic_api_key: str | None = Field(default=None, description="Key for anthropic:.")
    guardian_classifier: Literal["off", "model"] = Field(
        default="off",
        description="Second screening layer: off, or model (the configured model classifies texts the rules are unsure of).",
    )
    ollama_host: str = Field(default="http://127.0.0.1:11434", description="Ollama server for ollama:.")

    budget_daily_usd: float = Field(default=50.0, gt=0, description="Daily model spend limit per tenant, in dollars.")
    budget_workflow_usd: float = Field(default=5.0, gt=0, description="Spend limit of one workflow run, in dollars.")
    budget_turn_spike_fraction: float = Field(
        default=0.10, gt=0, le=1, description="One turn may cost at most this share of the daily limit."
    )
    budget_tenant_limits: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Per-tenant overrides as JSON, e.g. {"acme": {"daily_usd": 200}}.',
    )
    price_table: Path | None = Field(
        default=None, description="A YAML file of model prices that overrides the shipped table."
    )

    api_host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port of the API.")

    api_keys: list[ApiKeyEntry] = Field(
        default_factory=list,
        description='API keys as JSON: [{"name", "role", "tenant", "sha256" (or "key"), "approves_as"}].',
    )
    api_key: SecretStr | None = Field(
        default=None, description="The key the CLI sends to the API. Unset: the local admin key in the data dir."
    )
    jwt_secret: SecretStr | None = Field(
        default=None, min_length=32, description="HS256 secret of accepted JWTs (32+ chars). Unset: JWTs refused."
    )
    rate_limit_requests: int = Field(
        default=600, ge=1, description="Requests one key (or JWT subject) may make per rate-limit window."
    )
    rate_limit_window_s: int = Field(default=60, ge=1, le=86_400, description="Rate-limit window, in seconds.")
    api_max_body_bytes: int = Field(
        default=1_000_000, ge=1_024, description="Largest request body the API reads; larger ones get 413."
    )

    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="Where traces (and OTLP metrics) go: none | console | otlp."
    )
    otel_endpoint: str | None = Field(
        default=None,
        description="OTLP gRPC endpoint, e.g. http://otel-collector:4317. Unset: OTEL_EXPORTER_OTLP_ENDPOINT.",
    )
    service_name: str = Field(default="convergio", description="service.name of traces, metrics and logs.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text or as JSON with trace, workflow, step and tenant ids."
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port where the worker serves Prometheus /metrics. Unset: none."
    )

    embedding_model: str = Field(
        default="local",
        description="Embeddings: local (all-MiniLM-L6-v2 int8 ONNX, offline) | openai:<model> (384 dimensions).",
    )
    embedding_cache_ttl_s: int = Field(
        default=7 * 86_400, ge=0, description="How long Redis keeps an embedding (by content hash and model); 0: no cache."
    )
    rag_weight_relevance: float = Field(default=0.6, ge=0, le=1, description="Retrieval score weight of relevance (cosine).")
    rag_weight_importance: float = Field(default=0.25, ge=0, le=1, description="Retrieval score weight of importance.")
    rag_weight_recency: float = Field(default=0.15, ge=0, le=1, description="Retrieval score weight of recency.")
    rag_recency_half_life_hours: float = Field(
        default=720.0, gt=0, description="Recency halves every this many hours (exponential decay)."
    )
    rag_top_k: int = Field(default=5, ge=1, le=50, description="Sources retrieved for a step unless it says otherwise.")
    rag_context_tokens: int = Field(
        default=1200, ge=50, le=50_000, description="Token budget of the retrieved context given to an agent."
    )
    rag_chunk_tokens: int = Field(
        default=160, ge=20, le=2_000, description="Tokens per knowledge chunk (MiniLM reads at most 256 word pieces)."
    )
    rag_chunk_overlap: int = Field(default=32, ge=0, le=500, description="Tokens shared by neighbouring chunks.")
    rag_ef_search: int = Field(default=160, ge=1, le=1_000, description="pgvector hnsw.ef_search of retrieval queries.")
    knowledge_max_chars: int = Field(
        default=500_000, ge=1, description="Largest document (in characters) POST /knowledge and ingest accept."
    )

    @field_validator("jwt_secret", "api_key", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        """``VAR=`` (as compose writes an unset ``${VAR:-}``) means "not configured"."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("budget_tenant_limits")
    @classmethod
    def _tenant_limits_are_limits(
        cls, value: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        """Checked here, not when a tenant's run starts (a misspelt field failed every run of the
        tenant with a 500)."""
        from convergio.costs.budget import BudgetLimits

        for tenant, limits in value.items():
            unknown = sorted(set(limits) - set(BudgetLimits.model_fields))
            if unknown:
                known = sorted(BudgetLimits.model_fields)
                raise ValueError(f"tenant {tenant!r}: unknown field(s) {unknown}; use {known}")
            try:
                BudgetLimits.model_validate(limits)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"tenant {tenant!r}: {problems}") from None
        return value

    @field_validator("price_table")
    @classmethod
    def _price_table_loads(cls, value: Path | None) -> Path | None:
        """A missing or malformed override file is a bad setting, reported before anything starts
        (it failed the worker with a traceback once the servers were up)."""
        if value is not None:
            from convergio.costs.pricing import default_price_table

            default_price_table(value)  # PriceTableError is a ValueError naming the file
        return value

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty; use 'offline' for the built-in offline client")
        return value

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def embedded_temporal(self) -> bool:
        return self.temporal_address is None

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def effective_temporal_address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"postgresql://postgres@127.0.0.1:{self.postgres_port}/convergio"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def event_retention(self) -> timedelta:
        return timedelta(days=self.event_retention_days)

    @property
    def effective_temporal_ui_url(self) -> str:
        return (self.temporal_ui_url or f"http://127.0.0.1:{self.temporal_ui_port}").rstrip("/")

    def workflow_ui_url(self, workflow_id: str) -> str:
        return f"{self.effective_temporal_ui_url}/namespaces/{self.temporal_namespace}/workflows/{workflow_id}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings`` instead."""
    return Settings()
