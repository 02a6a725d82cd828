-- Foundation: pgvector, and the record of every agent turn a workflow ran.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS agent_turns (
    workflow_id       text        NOT NULL,
    step_id           text        NOT NULL,
    turn              integer     NOT NULL,
    agent             text        NOT NULL,
    model             text        NOT NULL,
    prompt_tokens     integer     NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer     NOT NULL CHECK (completion_tokens >= 0),
    finish_reason     text        NOT NULL,
    content           text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, step_id, turn)
);
