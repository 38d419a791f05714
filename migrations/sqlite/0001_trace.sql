-- Trace store, SQLite flavour. Times are milliseconds since the epoch.
-- One row per stored message (its own "store" event); everything that can
-- be derived from ranges (flushed-up-to, delivered and committed offsets)
-- is stored as ranges, not per message.

CREATE TABLE trace_messages (
    id TEXT PRIMARY KEY,
    node BIGINT NOT NULL,
    topic TEXT NOT NULL,
    msg_key TEXT,
    tags TEXT,
    queue_id BIGINT NOT NULL,
    queue_offset BIGINT NOT NULL,
    pos BIGINT NOT NULL,
    end_pos BIGINT NOT NULL,
    born_at BIGINT NOT NULL,
    stored_at BIGINT NOT NULL,
    acked_at BIGINT NOT NULL,
    producer TEXT,
    send_mode TEXT NOT NULL,
    flush_mode TEXT NOT NULL,
    send_status TEXT NOT NULL,
    traceparent TEXT
) WITHOUT ROWID;
CREATE INDEX trace_messages_stored ON trace_messages (stored_at);
CREATE INDEX trace_messages_topic ON trace_messages (topic, stored_at);

-- Each word of a message's key, for search by key through an index.
CREATE TABLE trace_keys (
    msg_key TEXT NOT NULL,
    id TEXT NOT NULL,
    stored_at BIGINT NOT NULL
);
CREATE INDEX trace_keys_key ON trace_keys (msg_key, stored_at);

-- A message's own events: retries, dead-lettering, replays, deliveries of
-- retry records, losses found by the audit.
CREATE TABLE trace_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    at BIGINT NOT NULL,
    node BIGINT NOT NULL,
    grp TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    record_id TEXT,
    rec_topic TEXT,
    rec_queue BIGINT,
    rec_offset BIGINT,
    attempt BIGINT
);
CREATE INDEX trace_events_msg ON trace_events (message_id, at);
CREATE INDEX trace_events_record ON trace_events (record_id);

-- Watermarks sampled from the store: every byte below `position` was
-- flushed (kind 'flushed') at or before `at`.
CREATE TABLE trace_watermarks (
    node BIGINT NOT NULL,
    kind TEXT NOT NULL,
    position BIGINT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX trace_watermarks_pos ON trace_watermarks (node, kind, position);

-- Offsets [from_offset, to_offset) of a queue handed to a group by a pull.
CREATE TABLE trace_deliveries (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    queue_id BIGINT NOT NULL,
    from_offset BIGINT NOT NULL,
    to_offset BIGINT NOT NULL,
    at BIGINT NOT NULL,
    node BIGINT NOT NULL
);
CREATE INDEX trace_deliveries_q ON trace_deliveries (topic, queue_id, from_offset);

-- A group's committed offset for a queue, as committed.
CREATE TABLE trace_commits (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    queue_id BIGINT NOT NULL,
    queue_offset BIGINT NOT NULL,
    at BIGINT NOT NULL,
    auto_commit BIGINT NOT NULL
);
CREATE INDEX trace_commits_q ON trace_commits (topic, queue_id, queue_offset);

-- Periods in which the tracer shed events because its queue was full.
CREATE TABLE trace_gaps (
    node BIGINT NOT NULL,
    from_at BIGINT NOT NULL,
    to_at BIGINT NOT NULL,
    dropped BIGINT NOT NULL
);
