-- Produce and store stages as runs, not a row per message: a run is a
-- contiguous stretch [pos_from, pos_to) of one node's log in one boot
-- epoch, messages of one topic answered the same way. The log holds each
-- message's own fields; `entries` (varints, see server/src/trace/runs.rs)
-- lists each message's length, queue slot, times and key, so a message the
-- log lost can still be named and found. trace_messages and trace_keys are
-- no longer written or read (rows of earlier versions stay in them).
CREATE TABLE trace_runs (
    node BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    pos_from BIGINT NOT NULL,
    pos_to BIGINT NOT NULL,
    msg_count BIGINT NOT NULL,
    topic TEXT NOT NULL,
    stored_from BIGINT NOT NULL,
    stored_to BIGINT NOT NULL,
    acked_to BIGINT NOT NULL,
    send_mode TEXT NOT NULL,
    send_status TEXT NOT NULL,
    flush_mode TEXT NOT NULL,
    replication TEXT NOT NULL,
    entries BYTEA NOT NULL
);
-- Entry lists barely compress (varints): store them out of line without
-- spending CPU on TOAST compression.
ALTER TABLE trace_runs ALTER COLUMN entries SET STORAGE EXTERNAL;
CREATE UNIQUE INDEX trace_runs_pos ON trace_runs (node, epoch, pos_from);
CREATE INDEX trace_runs_stored ON trace_runs (stored_to);
CREATE INDEX trace_runs_topic ON trace_runs (topic, stored_to);

-- A message's key and topic on its own events (the audit's 'lost' rows):
-- a message gone from the log is still found by key.
ALTER TABLE trace_events ADD COLUMN msg_key TEXT;
CREATE INDEX trace_events_lost ON trace_events (outcome, msg_key);

-- The messages a commit covers that the handler finished with success,
-- with its time: varint pairs (offset delta, handler ms).
ALTER TABLE trace_commits ADD COLUMN handled BYTEA;
