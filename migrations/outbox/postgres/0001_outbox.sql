-- Waybill's transactional outbox (the seed article's 本地消息表), PostgreSQL.
-- Lives in the application's own database: `Outbox::enqueue` inserts a row in
-- the same transaction as the business write; a relay sends pending rows until
-- SEND_OK. Run by `waybill_client::outbox::install`, or copy into your own
-- migrations.
CREATE TABLE IF NOT EXISTS waybill_outbox (
    id              BIGSERIAL PRIMARY KEY,
    topic           TEXT    NOT NULL,
    msg_key         TEXT,
    tags            TEXT,
    properties      TEXT    NOT NULL,
    body            BYTEA   NOT NULL,
    created_at      BIGINT  NOT NULL,
    -- pending | sent | parked
    status          TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    sent_at         BIGINT,
    message_id      TEXT
);
-- The claim walks pending rows in id order (oldest first).
CREATE INDEX IF NOT EXISTS waybill_outbox_due ON waybill_outbox (status, id);
CREATE INDEX IF NOT EXISTS waybill_outbox_key ON waybill_outbox (msg_key, status, id);
CREATE INDEX IF NOT EXISTS waybill_outbox_sent ON waybill_outbox (status, sent_at);
