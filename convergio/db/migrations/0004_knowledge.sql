-- Knowledge (RAG) and memory: documents cut into embedded chunks, and what runs remember.
-- Embeddings are 384-dimensional (all-MiniLM-L6-v2; OpenAI models are asked for 384 too).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS knowledge_documents (
    id           bigserial   PRIMARY KEY,
    tenant       text        NOT NULL,
    source       text        NOT NULL,
    title        text        NOT NULL DEFAULT '',
    content_hash text        NOT NULL,
    importance   double precision        NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    chunks       integer     NOT NULL DEFAULT 0 CHECK (chunks >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, content_hash)
);

CREATE TABLE IF NOT EXISTS knowledge_chunks (
    id              bigserial   PRIMARY KEY,
    document_id     bigint      NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    tenant          text        NOT NULL,
    source          text        NOT NULL,
    ordinal         integer     NOT NULL CHECK (ordinal >= 0),
    content         text        NOT NULL,
    content_hash    text        NOT NULL,
    tokens          integer     NOT NULL CHECK (tokens >= 0),
    embedding       vector(384) NOT NULL,
    embedding_model text        NOT NULL,
    importance      double precision        NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- De-duplication: the same text is stored once per tenant, whichever document brings it.
    UNIQUE (tenant, content_hash)
);

-- Approximate nearest neighbours by cosine distance (the `<=>` operator of the retrieval query).
CREATE INDEX IF NOT EXISTS knowledge_chunks_embedding_hnsw
    ON knowledge_chunks USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX IF NOT EXISTS knowledge_chunks_tenant_idx ON knowledge_chunks (tenant, created_at);
CREATE INDEX IF NOT EXISTS knowledge_chunks_metadata_idx ON knowledge_chunks USING gin (metadata jsonb_path_ops);
CREATE INDEX IF NOT EXISTS knowledge_chunks_document_idx ON knowledge_chunks (document_id);

-- Memories: outputs of completed workflow steps and conversation facts, retrieved by later steps.
CREATE TABLE IF NOT EXISTS memories (
    id              bigserial   PRIMARY KEY,
    tenant          text        NOT NULL,
    workflow_id     text        NOT NULL,
    step_id         text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('step_output', 'fact')),
    agent           text        NOT NULL DEFAULT '',
    content         text        NOT NULL,
    content_hash    text        NOT NULL,
    embedding       vector(384) NOT NULL,
    embedding_model text        NOT NULL,
    importance      double precision        NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- A retried activity (or a replayed step) stores the same memory once.
    UNIQUE (workflow_id, step_id, kind, content_hash)
);

-- A run's memories are few: they are found by workflow and scored exactly (no ANN index).
CREATE INDEX IF NOT EXISTS memories_workflow_idx ON memories (tenant, workflow_id);
