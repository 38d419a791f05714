//! What the outbox and the SQL inbox share: which backend a URL names, a
//! pool on it, a check that a table has the columns the SDK reads, and
//! times as text.
//!
//! Both live in the *application's* database (SQLite or PostgreSQL), so
//! nothing here assumes Waybill owns it: tables are created only when the
//! caller asks (`install`), and a table of the wrong shape is an error that
//! names the column and what it should be, before any row is touched.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Longest wait for a pooled connection: a database that cannot give one
/// in this time is reported down (the relay retries, the inbox refuses).
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A SQL error with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{0:?} is not a database URL the SDK knows: use sqlite://PATH or postgres://…")]
    Url(String),
    #[error("{what}: {source}")]
    Db {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("table {table} {problem}")]
    Schema { table: String, problem: String },
}

impl SqlError {
    pub(crate) fn db(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> SqlError {
        let what = what.into();
        move |source| SqlError::Db { what, source }
    }
}

/// The two backends the SDK speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Result<Backend, SqlError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(SqlError::Url(url.chars().take(200).collect()))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A pool on `url`. SQLite files are created when missing and run in WAL
/// mode with `synchronous = FULL`: these tables decide whether a message
/// exists and whether an effect happened, so a commit must survive a power
/// loss (unlike the trace store's NORMAL).
pub async fn connect(url: &str, max_connections: u32) -> Result<(AnyPool, Backend), SqlError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url)?;
    let url_open = match backend {
        Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
        _ => url.to_string(),
    };
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(&url_open)
        .await
        .map_err(SqlError::db(format!("cannot open {}", redact(url))))?;
    Ok((pool, backend))
}

/// `url` without a password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// What a column must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Bytes,
}

impl Kind {
    fn accepts(self, declared: &str) -> bool {
        let t = declared.to_ascii_lowercase();
        match self {
            Kind::Int => t.contains("int") || t == "bigserial" || t == "serial",
            Kind::Text => t.contains("text") || t.contains("char") || t.contains("clob"),
            Kind::Bytes => t.contains("blob") || t == "bytea",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Int => "an integer",
            Kind::Text => "text",
            Kind::Bytes => "bytes (BLOB/BYTEA)",
        }
    }
}

/// Fails unless `table` exists with every column of `want` of its kind;
/// `fix` says how to create it.
pub async fn check_table(
    pool: &AnyPool,
    backend: Backend,
    table: &str,
    want: &[(&str, Kind)],
    fix: &str,
) -> Result<(), SqlError> {
    let sql = match backend {
        Backend::Sqlite => "SELECT name AS name, type AS type FROM pragma_table_info($1)",
        Backend::Postgres => {
            "SELECT column_name::text AS name, data_type::text AS type FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let rows: Vec<AnyRow> = sqlx::query(sql)
        .bind(table)
        .fetch_all(pool)
        .await
        .map_err(SqlError::db(format!("cannot read the columns of {table}")))?;
    if rows.is_empty() {
        return Err(SqlError::Schema {
            table: table.into(),
            problem: format!("does not exist in this database: {fix}"),
        });
    }
    let have: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get::<String, _>("name").unwrap_or_default(),
                r.try_get::<String, _>("type").unwrap_or_default(),
            )
        })
        .collect();
    for (col, kind) in want {
        match have.iter().find(|(n, _)| n.eq_ignore_ascii_case(col)) {
            None => {
                return Err(SqlError::Schema {
                    table: table.into(),
                    problem: format!("has no column {col} (it must hold {}): {fix}", kind.name()),
                })
            }
            Some((_, t)) if !kind.accepts(t) => {
                return Err(SqlError::Schema {
                    table: table.into(),
                    problem: format!("column {col} is {t}, but it must hold {}: {fix}", kind.name()),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `ms` since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_083_200_123), "2026-12-01T00:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }

    #[test]
    fn kinds_accept_both_backends_spellings() {
        assert!(Kind::Int.accepts("BIGINT") && Kind::Int.accepts("integer") && !Kind::Int.accepts("text"));
        assert!(Kind::Bytes.accepts("bytea") && Kind::Bytes.accepts("BLOB") && !Kind::Bytes.accepts("text"));
        assert!(Kind::Text.accepts("character varying") && Kind::Text.accepts("TEXT"));
    }
}
