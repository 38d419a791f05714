//! The trace database: SQLite (embedded default) or PostgreSQL, via sqlx.
//!
//! One `AnyPool` and portable SQL (`$n` placeholders work on both); the
//! migrations differ per backend and are embedded in the binary. SQLite runs
//! in WAL mode with `synchronous = NORMAL`, PostgreSQL sessions with
//! `synchronous_commit = off`: the trace is evidence, not the message store,
//! so a power loss may cost its last moments, never the messages themselves
//! (and no trace commit waits on an fsync that competes with the log's).

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;

use super::TraceError;

/// Longest wait for a pooled connection (including opening one).
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Which backend a URL names: the SDK's, so the trace store, the outbox
/// and the inbox read URLs alike.
pub use waybill_client::sql::Backend;

pub fn backend_of(url: &str) -> Result<Backend, TraceError> {
    Backend::of(url).map_err(|_| TraceError::Url(url.chars().take(200).collect()))
}

/// Connects and migrates.
pub async fn connect(url: &str) -> Result<AnyPool, TraceError> {
    sqlx::any::install_default_drivers();
    let backend = backend_of(url)?;
    let url = match backend {
        // Create the file if missing; WAL so readers never block the writer.
        Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
        _ => url.to_string(),
    };
    let pool = AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
        // A connection that cannot be had soon is a store that is down: the
        // writer retries (sqlx's default, 30 s, once held the node's start).
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => {
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    }
                    // Commits do not wait for PostgreSQL's WAL fsync (its WAL
                    // writer flushes within moments): same bargain as SQLite's
                    // NORMAL, and no fsync competing with the commit log's.
                    Backend::Postgres => {
                        sqlx::query("SET synchronous_commit = off").execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    match backend {
        Backend::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
        Backend::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
    }
    Ok(pool)
}

/// Reads an optional string column.
pub fn opt_str(row: &AnyRow, col: &str) -> Option<String> {
    use sqlx::Row;
    row.try_get::<Option<String>, _>(col).ok().flatten()
}

/// Reads an optional integer column.
pub fn opt_int(row: &AnyRow, col: &str) -> Option<i64> {
    use sqlx::Row;
    row.try_get::<Option<i64>, _>(col).ok().flatten()
}

/// Reads an integer column (0 when absent or null).
pub fn int(row: &AnyRow, col: &str) -> i64 {
    use sqlx::Row;
    row.try_get::<Option<i64>, _>(col).ok().flatten().unwrap_or(0)
}

/// Reads a string column ("" when absent or null).
pub fn text(row: &AnyRow, col: &str) -> String {
    opt_str(row, col).unwrap_or_default()
}

/// `($1, $2, …), (…)` (PostgreSQL) or `(?, ?, …), (…)` (SQLite) for `rows`
/// rows of `cols` values. Positional `?` matters on SQLite: sqlx resolves
/// `$n` there by parameter name, a linear search per bind — quadratic in a
/// 17,000-value batch insert. (sqlx's `QueryBuilder` over `Any` emits `?`,
/// which PostgreSQL rejects, hence this helper.)
pub fn values(backend: Backend, rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            match backend {
                Backend::Sqlite => out.push('?'),
                Backend::Postgres => {
                    out.push('$');
                    out.push_str(&(r * cols + c + 1).to_string());
                }
            }
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_number_placeholders_row_by_row() {
        use super::Backend;
        assert_eq!(super::values(Backend::Postgres, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(super::values(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
