//! The inbox's SQL side: the `waybill_inbox` table and the claim, which
//! inserts `(group, key)` in the caller's transaction.
//!
//! The claim is one upsert: a new key is inserted; a key handled longer
//! than the window ago is taken over (its row updated); a key handled
//! within the window is left alone, and the claim reads how it was first
//! handled. On PostgreSQL a second transaction claiming a key the first
//! has inserted but not committed waits for it: it then sees the key (a
//! duplicate) if the first committed, or inserts it if the first rolled
//! back. So one key is never handled by two committed transactions.

use std::future::Future;
use std::time::Duration;

use sqlx::AnyPool;

use super::{Claim, InboxError, TABLE};
use crate::sql::{check_table, now_ms, rfc3339, Backend, Kind, SqlError};

const COLUMNS: &[(&str, Kind)] = &[
    ("consumer_group", Kind::Text),
    ("dedupe_key", Kind::Text),
    ("message_id", Kind::Text),
    ("handled_at", Kind::Int),
];

/// Creates the table when missing, then checks its shape (an existing
/// table is never altered: a wrong one is an error naming the column).
pub(super) async fn install_and_check(pool: &AnyPool, backend: Backend) -> Result<(), InboxError> {
    let fix = format!(
        "drop it or fix it to match migrations/inbox/{}/0001_inbox.sql",
        backend.name()
    );
    match check_table(pool, backend, TABLE, COLUMNS, &fix).await {
        Err(SqlError::Schema { problem, .. }) if problem.starts_with("does not exist") => {}
        other => return Ok(other?),
    }
    sqlx::raw_sql(super::ddl(backend))
        .execute(pool)
        .await
        .map_err(SqlError::db("cannot create the inbox table"))?;
    check_table(pool, backend, TABLE, COLUMNS, &fix).await?;
    Ok(())
}

const CLAIM: &str = "INSERT INTO waybill_inbox (consumer_group, dedupe_key, message_id, handled_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (consumer_group, dedupe_key) DO UPDATE SET \
                     message_id = excluded.message_id, handled_at = excluded.handled_at \
                     WHERE waybill_inbox.handled_at < $5";
const FIRST: &str = "SELECT message_id, handled_at FROM waybill_inbox WHERE consumer_group = $1 AND dedupe_key = $2";

/// A connection (or transaction: pass `&mut *tx`) the inbox can claim on:
/// SQLite's, PostgreSQL's, or sqlx's `Any`.
pub trait InboxConn: Send {
    #[doc(hidden)]
    fn claim_row(
        &mut self,
        group: &str,
        key: &str,
        id: &str,
        now: i64,
        cutoff: i64,
    ) -> impl Future<Output = Result<Option<(String, i64)>, sqlx::Error>> + Send;
}

macro_rules! inbox_conn {
    ($conn:ty) => {
        impl InboxConn for $conn {
            /// `None`: claimed; `Some((id, at))`: handled before as `id` at `at`.
            async fn claim_row(
                &mut self,
                group: &str,
                key: &str,
                id: &str,
                now: i64,
                cutoff: i64,
            ) -> Result<Option<(String, i64)>, sqlx::Error> {
                let done = sqlx::query(CLAIM)
                    .bind(group.to_string())
                    .bind(key.to_string())
                    .bind(id.to_string())
                    .bind(now)
                    .bind(cutoff)
                    .execute(&mut *self)
                    .await?;
                if done.rows_affected() > 0 {
                    return Ok(None);
                }
                let row: Option<(String, i64)> = sqlx::query_as(FIRST)
                    .bind(group.to_string())
                    .bind(key.to_string())
                    .fetch_optional(&mut *self)
                    .await?;
                // The row vanished in between (purged): it was old, so this
                // delivery is not a duplicate within the window; but the
                // claim did not insert, so say so rather than guess.
                Ok(Some(row.unwrap_or_else(|| (String::from("(purged)"), 0))))
            }
        }
    };
}
inbox_conn!(sqlx::SqliteConnection);
inbox_conn!(sqlx::PgConnection);
inbox_conn!(sqlx::AnyConnection);

/// Claims `key` for `group` on `conn` (the caller's transaction): commit
/// the transaction with the business effect, or roll it back to release
/// the key. `id` is the message being handled; `window` zero = forever.
pub async fn claim_in<C: InboxConn + ?Sized>(
    conn: &mut C,
    group: &str,
    key: &str,
    id: &str,
    window: Duration,
) -> Result<Claim, sqlx::Error> {
    let now = now_ms();
    let cutoff = if window.is_zero() {
        i64::MIN
    } else {
        now - window.as_millis() as i64
    };
    Ok(match conn.claim_row(group, key, id, now, cutoff).await? {
        None => Claim::First,
        Some((first, at)) => Claim::Duplicate(first_handled(&first, at, key)),
    })
}

/// The text a duplicate carries.
pub(super) fn first_handled(id: &str, at_ms: i64, key: &str) -> String {
    format!("first handled as {id} at {} (dedupe key {key:?})", rfc3339(at_ms))
}

/// Deletes the group's keys older than `window`.
pub(super) async fn purge(pool: &AnyPool, group: &str, window: Duration) -> Result<u64, SqlError> {
    let cutoff = now_ms() - window.as_millis() as i64;
    let r = sqlx::query("DELETE FROM waybill_inbox WHERE consumer_group = $1 AND handled_at < $2")
        .bind(group.to_string())
        .bind(cutoff)
        .execute(pool)
        .await
        .map_err(SqlError::db("cannot purge old inbox keys"))?;
    Ok(r.rows_affected())
}
