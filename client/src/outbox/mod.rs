//! The transactional outbox (the seed article's "本地消息表", local message
//! table): a message is written to the `waybill_outbox` table **in the
//! caller's database transaction**, so it exists if and only if the
//! business write committed; a [`Relay`] sends pending rows with
//! [`crate::Producer::send`] until `SEND_OK`, with backoff, and marks them
//! sent.
//!
//! Invariants:
//! - A row leaves `pending` only as `sent` (after `SEND_OK`) or `parked`
//!   (its attempts ran out): nothing is dropped. Parked rows stay visible
//!   ([`status`]) and can be sent again ([`retry_parked`]).
//! - Rows with the same key go out in row order: a row is claimed only
//!   when no earlier row with its key is unsent (pending *or* parked), so a
//!   parked row holds back the rows of its key behind it.
//! - Several relays may share a table: each claim leases rows to one relay
//!   (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer). A
//!   relay that dies keeps its lease until it expires, or until a relay of
//!   the same name starts and takes its leases back.
//! - Delivery is at least once: a relay that dies between `SEND_OK` and
//!   marking the row sent sends it again. Consumers dedupe with
//!   [`crate::inbox`].
//! - Every message carries its row id and attempt
//!   ([`crate::properties::PROP_OUTBOX_ROW`], `PROP_OUTBOX_ATTEMPT`), so the
//!   broker's trace names the row it came from.

mod relay;
mod status;

use std::collections::BTreeMap;
use std::future::Future;

pub use relay::{Relay, RelayOptions, RelayStats};
pub use status::{retry_parked, status, OutboxStatus, ParkedRow};

use crate::properties::reserved;
use crate::protocol::Message;
use crate::sql::{check_table, Backend, Kind, SqlError};

/// The outbox table's name.
pub const TABLE: &str = "waybill_outbox";

/// The table's DDL per backend (also in `migrations/outbox/`).
pub fn ddl(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => include_str!("../../../migrations/outbox/sqlite/0001_outbox.sql"),
        Backend::Postgres => include_str!("../../../migrations/outbox/postgres/0001_outbox.sql"),
    }
}

/// Columns the relay reads and writes, and what they hold.
const COLUMNS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("topic", Kind::Text),
    ("msg_key", Kind::Text),
    ("tags", Kind::Text),
    ("properties", Kind::Text),
    ("body", Kind::Bytes),
    ("created_at", Kind::Int),
    ("status", Kind::Text),
    ("attempts", Kind::Int),
    ("next_attempt_at", Kind::Int),
    ("lease_owner", Kind::Text),
    ("lease_until", Kind::Int),
    ("last_error", Kind::Text),
    ("sent_at", Kind::Int),
    ("message_id", Kind::Text),
];

/// Longest topic name accepted (the broker's limit).
const MAX_TOPIC: usize = 127;

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("cannot enqueue: {0}")]
    Invalid(String),
}

/// Creates the outbox table and its indexes when missing (idempotent).
pub async fn install(pool: &sqlx::AnyPool, backend: Backend) -> Result<(), OutboxError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl(backend)))
        .execute(pool)
        .await
        .map_err(SqlError::db("cannot create the outbox table"))?;
    Ok(())
}

/// Fails with the column and the reason unless the table has the shape the
/// relay needs.
pub async fn check(pool: &sqlx::AnyPool, backend: Backend) -> Result<(), OutboxError> {
    let fix = format!(
        "create it with waybill_client::outbox::install or migrations/outbox/{}/0001_outbox.sql",
        backend.name()
    );
    check_table(pool, backend, TABLE, COLUMNS, &fix).await?;
    Ok(())
}

/// A connection (or transaction: pass `&mut *tx`) the outbox can insert on:
/// SQLite's, PostgreSQL's, or sqlx's `Any`.
pub trait OutboxConn: Send {
    #[doc(hidden)]
    fn insert_row(&mut self, row: NewRow) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
}

#[doc(hidden)]
pub struct NewRow {
    topic: String,
    key: Option<String>,
    tags: Option<String>,
    properties: String,
    body: Vec<u8>,
    created_at: i64,
}

const INSERT: &str = "INSERT INTO waybill_outbox (topic, msg_key, tags, properties, body, created_at, status, \
                      attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7) RETURNING id";

macro_rules! outbox_conn {
    ($conn:ty) => {
        impl OutboxConn for $conn {
            async fn insert_row(&mut self, row: NewRow) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar::<_, i64>(INSERT)
                    .bind(row.topic)
                    .bind(row.key)
                    .bind(row.tags)
                    .bind(row.properties)
                    .bind(row.body)
                    .bind(row.created_at)
                    .bind(row.created_at)
                    .fetch_one(&mut *self)
                    .await
            }
        }
    };
}
outbox_conn!(sqlx::SqliteConnection);
outbox_conn!(sqlx::PgConnection);
outbox_conn!(sqlx::AnyConnection);

/// Writes `message` for `topic` into the outbox on `conn` — the caller's
/// transaction, so it commits or rolls back with the business write.
/// Returns the row id (which the relayed message carries).
///
/// Refused before anything is written: an empty or over-long topic, or a
/// property a producer may not set.
pub async fn enqueue<C: OutboxConn + ?Sized>(conn: &mut C, topic: &str, message: Message) -> Result<i64, OutboxError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC {
        return Err(OutboxError::Invalid(format!(
            "topic must be 1 to {MAX_TOPIC} bytes, got {}",
            topic.len()
        )));
    }
    if let Some((name, why)) = message
        .properties
        .keys()
        .find_map(|k| reserved(k).map(|why| (k.clone(), why)))
    {
        return Err(OutboxError::Invalid(format!("property {name} is reserved: {why}")));
    }
    let created_at = if message.born_ms > 0 {
        message.born_ms
    } else {
        crate::sql::now_ms()
    };
    let row = NewRow {
        topic: topic.to_string(),
        key: message.key,
        tags: message.tags,
        properties: properties_to_text(&message.properties),
        body: message.body,
        created_at,
    };
    conn.insert_row(row)
        .await
        .map_err(|e| OutboxError::Sql(SqlError::db("cannot insert into waybill_outbox")(e)))
}

fn properties_to_text(p: &BTreeMap<String, String>) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| "{}".into())
}

/// Properties back from the table; a value that is not a JSON object of
/// strings (a row written by hand, say) is an error the relay parks on.
fn properties_from_text(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text).map_err(|e| format!("properties column is not a JSON object of strings: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_and_bad_text_is_an_error() {
        let mut p = BTreeMap::new();
        p.insert("a".to_string(), "1\"x".to_string());
        assert_eq!(properties_from_text(&properties_to_text(&p)).ok(), Some(p));
        assert!(properties_from_text("[1]").is_err());
        assert!(properties_from_text("{\"a\": 1}").is_err());
    }
}
