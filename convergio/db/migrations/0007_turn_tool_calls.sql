-- The tools a model call asked for (agents with tools): a retried turn activity finds them
-- here instead of calling the model again.
ALTER TABLE agent_turns ADD COLUMN IF NOT EXISTS tool_calls jsonb NULL;
