-- Loss windows (PostgreSQL): what a crash can take without the trace naming it.
--
-- trace_marks: the trace writer's progress, one row per (node, boot epoch),
-- overwritten with every batch it commits (and at least every idle tick).
-- `covered_at`: every event the tracer accepted before this time (ms) is
-- written. `max_unwritten`: the most acknowledged messages the tracer holds
-- unwritten at any moment (its queue bound, in messages); sends it cannot
-- queue are shed and, under async flush, fsynced before their answer, so a
-- crash can take at most that many acknowledged messages unrecorded.
-- `closed` = 1 once the node shut down cleanly (every acknowledged message
-- is in the fsynced log: nothing to look for).
CREATE TABLE trace_marks (
    node BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    at BIGINT NOT NULL,
    covered_at BIGINT NOT NULL,
    log_end BIGINT NOT NULL,
    flushed BIGINT NOT NULL,
    flush_mode TEXT NOT NULL,
    max_unwritten BIGINT NOT NULL,
    closed BIGINT NOT NULL,
    PRIMARY KEY (node, epoch)
);

-- Loss windows the audit found after a restart: acknowledged messages of
-- boot `epoch` that may be gone from the log without a trace row naming
-- them. Acknowledged within [from_at, to_at] (from_at NULL: unknown), at
-- log positions [from_pos, to_pos) (to_pos NULL: unknown), at most
-- `max_count` of them (NULL: no bound). `kind`: 'tail' (after the writer's
-- last mark), 'unmarked' (a boot whose tracer never wrote a mark), 'gap'
-- (a batch the trace store refused).
CREATE TABLE trace_windows (
    node BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    kind TEXT NOT NULL,
    from_at BIGINT,
    to_at BIGINT NOT NULL,
    from_pos BIGINT NOT NULL,
    to_pos BIGINT,
    max_count BIGINT,
    found_at BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX trace_windows_node ON trace_windows (node, epoch);

-- Gaps now carry their boot, how many messages the dropped events held,
-- and for a batch the trace store refused (acknowledged, maybe not
-- durable) the count and log range of those messages.
ALTER TABLE trace_gaps ADD COLUMN epoch BIGINT;
ALTER TABLE trace_gaps ADD COLUMN messages BIGINT;
ALTER TABLE trace_gaps ADD COLUMN at_risk BIGINT;
ALTER TABLE trace_gaps ADD COLUMN pos_from BIGINT;
ALTER TABLE trace_gaps ADD COLUMN pos_to BIGINT;
