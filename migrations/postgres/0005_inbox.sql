-- Inbox facts on commits (postgres). dedupe_window: the committing group
-- handles through an inbox that remembers keys this long (ms, 0 = forever;
-- NULL: no inbox declared). duplicates: the messages that inbox
-- acknowledged without running the handler, per message varints (offset
-- delta, text length) then the text ("first handled as …"), see
-- server/src/trace/varint.rs; NULL when there were none. duplicate_count:
-- how many, so per-group counts need no decoding (NULL when none, which
-- keeps the partial index small).
ALTER TABLE trace_commits ADD COLUMN dedupe_window BIGINT;
ALTER TABLE trace_commits ADD COLUMN duplicates BYTEA;
ALTER TABLE trace_commits ADD COLUMN duplicate_count BIGINT;
CREATE INDEX trace_commits_dups ON trace_commits (grp) WHERE duplicate_count IS NOT NULL;
