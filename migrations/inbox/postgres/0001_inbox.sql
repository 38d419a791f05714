-- Waybill's inbox (idempotent consumption, the seed article's 消费幂等), PostgreSQL.
-- One row per (consumer group, dedupe key) handled: the inbox inserts it in the
-- same transaction as the business effect, so a redelivered message finds it
-- and is acknowledged without running the handler again. Rows older than the
-- inbox's window are forgotten (and purged). Run by
-- `waybill_client::inbox::Inbox::connect`, or copy into your own migrations.
CREATE TABLE IF NOT EXISTS waybill_inbox (
    consumer_group TEXT   NOT NULL,
    dedupe_key     TEXT   NOT NULL,
    message_id     TEXT   NOT NULL,
    handled_at     BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, dedupe_key)
);
CREATE INDEX IF NOT EXISTS waybill_inbox_age ON waybill_inbox (handled_at);
