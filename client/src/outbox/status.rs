//! What an outbox table holds, for operators (`waybill outbox status`) and
//! the relay's stats; and sending parked rows again.
//!
//! Reads only aggregates and the first parked rows, so a table with a
//! large backlog answers in one indexed pass.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::OutboxError;
use crate::sql::{now_ms, SqlError};

/// Parked rows listed by [`status`] (the counts cover all of them).
pub const PARKED_LISTED: i64 = 20;

/// An outbox table's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Rows not yet sent, in flight or waiting for their next attempt.
    pub pending: i64,
    /// Of `pending`, rows that failed at least once.
    pub retrying: i64,
    /// Rows whose attempts ran out: visible here, sent again by
    /// [`retry_parked`].
    pub parked: i64,
    /// Sent rows not yet deleted (kept for the relay's retention).
    pub sent: i64,
    /// Age of the oldest pending row (ms).
    pub oldest_pending_ms: Option<i64>,
    /// Most attempts any pending row has had.
    pub max_attempts: i64,
    /// Error of the pending or parked row that failed most recently.
    pub last_error: Option<(i64, String)>,
    /// The first parked rows, oldest first.
    pub parked_rows: Vec<ParkedRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRow {
    pub id: i64,
    pub topic: String,
    pub key: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> OutboxError {
    move |e| OutboxError::Sql(SqlError::db(what)(e))
}

/// The table's state now.
pub async fn status(pool: &AnyPool) -> Result<OutboxStatus, OutboxError> {
    let counts: AnyRow = sqlx::query(
        "SELECT \
         COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
         COALESCE(SUM(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 ELSE 0 END), 0) AS retrying, \
         COALESCE(SUM(CASE WHEN status = 'parked' THEN 1 ELSE 0 END), 0) AS parked, \
         COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0) AS sent, \
         MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest, \
         COALESCE(MAX(CASE WHEN status = 'pending' THEN attempts END), 0) AS max_attempts \
         FROM waybill_outbox",
    )
    .fetch_one(pool)
    .await
    .map_err(db("cannot count outbox rows"))?;
    let int = |c: &str| -> i64 { counts.try_get::<i64, _>(c).unwrap_or(0) };
    let oldest: Option<i64> = counts.try_get::<Option<i64>, _>("oldest").ok().flatten();
    let last = sqlx::query(
        "SELECT id, last_error FROM waybill_outbox WHERE status <> 'sent' AND last_error IS NOT NULL \
         ORDER BY next_attempt_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .map_err(db("cannot read the latest outbox error"))?;
    let parked_rows = sqlx::query(
        "SELECT id, topic, msg_key, attempts, last_error, created_at FROM waybill_outbox WHERE status = 'parked' \
         ORDER BY id LIMIT $1",
    )
    .bind(PARKED_LISTED)
    .fetch_all(pool)
    .await
    .map_err(db("cannot list parked outbox rows"))?
    .iter()
    .map(|r| ParkedRow {
        id: r.try_get("id").unwrap_or_default(),
        topic: r.try_get("topic").unwrap_or_default(),
        key: r.try_get::<Option<String>, _>("msg_key").ok().flatten(),
        attempts: r.try_get("attempts").unwrap_or_default(),
        last_error: r.try_get::<Option<String>, _>("last_error").ok().flatten(),
        created_at: r.try_get("created_at").unwrap_or_default(),
    })
    .collect();
    Ok(OutboxStatus {
        pending: int("pending"),
        retrying: int("retrying"),
        parked: int("parked"),
        sent: int("sent"),
        oldest_pending_ms: oldest.map(|at| (now_ms() - at).max(0)),
        max_attempts: int("max_attempts"),
        last_error: last.map(|r| {
            (
                r.try_get("id").unwrap_or_default(),
                r.try_get::<Option<String>, _>("last_error")
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
            )
        }),
        parked_rows,
    })
}

/// Puts parked rows back to pending with their attempts reset: `ids`, or
/// every parked row when `ids` is empty. Returns how many moved.
pub async fn retry_parked(pool: &AnyPool, ids: &[i64]) -> Result<u64, OutboxError> {
    let now = now_ms();
    let set = "UPDATE waybill_outbox SET status = 'pending', attempts = 0, next_attempt_at = $1, lease_owner = NULL, \
               lease_until = NULL WHERE status = 'parked'";
    if ids.is_empty() {
        let r = sqlx::query(set)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db("cannot retry parked rows"))?;
        return Ok(r.rows_affected());
    }
    let mut moved = 0;
    for id in ids {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("{set} AND id = $2")))
            .bind(now)
            .bind(*id)
            .execute(pool)
            .await
            .map_err(db("cannot retry a parked row"))?;
        moved += r.rows_affected();
    }
    Ok(moved)
}
