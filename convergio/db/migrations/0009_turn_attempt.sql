-- Which attempt of the turn's activity wrote the record. Each attempt holds and commits its own
-- cost in the live budget (reservation id workflow:step:turn, then ...#2, #3...): a retry that
-- finds the turn recorded commits the recording attempt's cost under that attempt's id, so it
-- is counted once. NULL: recorded before this column, when every attempt used the first id.
ALTER TABLE agent_turns ADD COLUMN IF NOT EXISTS attempt integer NULL;
