-- The replication mode a message was stored under (none, sync, async):
-- the timeline derives the replicate stage and its loss point from it and
-- from the 'replicated:<replica>' watermarks.
ALTER TABLE trace_messages ADD COLUMN replication TEXT;
