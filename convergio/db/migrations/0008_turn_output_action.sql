-- What answer screening did to a turn (allow, redact, approval, block): a retried turn activity
-- that finds its turn recorded must hand the same verdict back (a blocked tool call stays
-- blocked, a flagged answer still goes to a person).
ALTER TABLE agent_turns ADD COLUMN IF NOT EXISTS output_action text NULL;
