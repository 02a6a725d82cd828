-- How long each agent turn took (prompt screening, model call and answer screening), so
-- GET /stats can give response-time percentiles over every worker, not just one process.
ALTER TABLE agent_turns ADD COLUMN IF NOT EXISTS response_ms double precision NULL
    CHECK (response_ms IS NULL OR response_ms >= 0);
CREATE INDEX IF NOT EXISTS agent_turns_created_at_idx ON agent_turns (created_at);
