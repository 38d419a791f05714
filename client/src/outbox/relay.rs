//! The outbox relay: claims due rows, sends them, marks the outcome.
//!
//! One loop per relay: claim up to `batch` due rows (a lease of `lease`
//! with this relay's name, `attempts + 1`), send them concurrently, then in
//! one transaction mark each `sent` (on `SEND_OK`) or back to `pending`
//! with the error and the next due time — or `parked` when its attempts
//! ran out. A claim takes only the oldest unsent row of each key, so no two
//! rows of a key are ever in flight together and a key's rows reach the
//! broker in row order.
//!
//! The lease is what keeps two relays off one row; it must outlast a send
//! with all of the producer's retries (the default 60 s does for the
//! default 3 × 3 s). A relay that finds its own name on leased rows at
//! start (it was killed) takes them back at once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

use super::{check, properties_from_text, OutboxError};
use crate::properties::{PROP_OUTBOX_ATTEMPT, PROP_OUTBOX_ROW};
use crate::protocol::Message;
use crate::sql::{self, now_ms, Backend, SqlError};
use crate::{Producer, SendStatus};

#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// `sqlite://PATH` or `postgres://…`: the application's database.
    pub db_url: String,
    /// Lease owner; keep it stable across restarts so a restarted relay
    /// takes back the rows it held when it died.
    pub name: String,
    /// Most rows claimed (and sent concurrently) per round.
    pub batch: u32,
    /// Sends per row before it is parked.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles per attempt up to
    /// `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a claimed row belongs to this relay.
    pub lease: Duration,
    /// Pause when nothing is due (a [`Relay::wake`] cuts it short).
    pub poll_interval: Duration,
    /// Sent rows are deleted after this long.
    pub retention: Duration,
    /// Fault injection for tests: after the first round's sends, stop
    /// before marking them (the process is then killed from outside).
    #[doc(hidden)]
    pub halt_before_mark: bool,
}

impl RelayOptions {
    pub fn new(db_url: impl Into<String>) -> Self {
        RelayOptions {
            db_url: db_url.into(),
            name: format!("relay-{}", std::process::id()),
            batch: 64,
            max_attempts: 20,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(200),
            retention: Duration::from_secs(24 * 3600),
            halt_before_mark: false,
        }
    }
}

/// What the relay has done (after every round) and what the table holds
/// (counted about once a second).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Rows waiting to be sent (including ones in flight).
    pub pending: i64,
    /// Rows whose attempts ran out.
    pub parked: i64,
    /// Age of the oldest pending row, in ms.
    pub oldest_pending_ms: Option<i64>,
    /// Rows this relay marked sent since it started.
    pub sent: u64,
    /// Attempts of this relay that did not end in `SEND_OK`.
    pub failed_attempts: u64,
    /// The latest failure: row id and error.
    pub last_error: Option<(i64, String)>,
}

impl RelayStats {
    /// The stats in Prometheus' text format, labelled `relay="NAME"`, for
    /// the application to append to its own `/metrics`.
    pub fn prometheus(&self, relay: &str) -> String {
        let escaped = relay.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let l = format!("relay=\"{escaped}\"");
        let oldest = self.oldest_pending_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
        format!(
            "# TYPE waybill_outbox_pending gauge\nwaybill_outbox_pending{{{l}}} {}\n\
             # TYPE waybill_outbox_parked gauge\nwaybill_outbox_parked{{{l}}} {}\n\
             # TYPE waybill_outbox_oldest_pending_seconds gauge\nwaybill_outbox_oldest_pending_seconds{{{l}}} {oldest}\n\
             # TYPE waybill_outbox_sent_total counter\nwaybill_outbox_sent_total{{{l}}} {}\n\
             # TYPE waybill_outbox_failed_attempts_total counter\nwaybill_outbox_failed_attempts_total{{{l}}} {}\n",
            self.pending, self.parked, self.sent, self.failed_attempts
        )
    }
}

/// A running relay; stop it with [`Relay::shutdown`].
pub struct Relay {
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    stats: watch::Receiver<RelayStats>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Checks the table (a missing table or a wrong column is an error
    /// here, naming it), takes back this relay's own leases, and starts.
    pub async fn start(opts: RelayOptions, producer: Arc<Producer>) -> Result<Relay, OutboxError> {
        let (pool, backend) = sql::connect(&opts.db_url, 4).await?;
        check(&pool, backend).await?;
        sqlx::query(
            "UPDATE waybill_outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND status = \
             'pending'",
        )
        .bind(&opts.name)
        .execute(&pool)
        .await
        .map_err(SqlError::db("cannot take back this relay's leases"))?;
        let (stop, stop_rx) = watch::channel(false);
        let (stats_tx, stats) = watch::channel(RelayStats::default());
        let wake = Arc::new(Notify::new());
        let core = Core {
            opts,
            pool,
            backend,
            producer,
            stats: stats_tx,
        };
        let task = tokio::spawn(core.run(stop_rx, wake.clone()));
        Ok(Relay {
            stop,
            wake,
            stats,
            task,
        })
    }

    /// The latest stats.
    pub fn stats(&self) -> RelayStats {
        self.stats.borrow().clone()
    }

    /// A receiver that sees every stats update.
    pub fn watch(&self) -> watch::Receiver<RelayStats> {
        self.stats.clone()
    }

    /// Look for due rows now (call after committing an enqueue).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops after the round in flight (its rows are marked).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Core {
    opts: RelayOptions,
    pool: AnyPool,
    backend: Backend,
    producer: Arc<Producer>,
    stats: watch::Sender<RelayStats>,
}

/// A claimed row.
struct Claimed {
    id: i64,
    topic: String,
    attempt: i64,
    message: Result<Message, String>,
}

/// A round's marking: each row's outcome once marked.
type Marked = Result<Vec<(i64, Outcome)>, OutboxError>;

/// How a row's attempt ended.
enum Outcome {
    Sent(String),
    Failed(String),
}

/// Sent rows marked per statement (2 parameters each; well under
/// SQLite's 32,766 and PostgreSQL's 65,535 parameters).
const MARK_CHUNK: usize = 500;
/// Pause after a database error before the next round.
const DB_BACKOFF: Duration = Duration::from_secs(1);
/// How often the table's counts are refreshed when nothing happens.
const STATS_EVERY: Duration = Duration::from_secs(1);

impl Core {
    /// Rounds until stopped. Round k+1's claim and sends overlap round
    /// k's marking (both touch only their own rows: round k's are still
    /// leased and pending, so k+1 neither takes them nor passes them in a
    /// key's order); in flight stays at most one batch.
    async fn run(self, mut stop: watch::Receiver<bool>, wake: Arc<Notify>) {
        let this = Arc::new(self);
        let mut last_stats = tokio::time::Instant::now() - STATS_EVERY;
        let mut last_clean = tokio::time::Instant::now();
        let clean_every = (this.opts.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut sent = 0u64;
        let mut failed = 0u64;
        let mut last_error = None;
        let mut marking: Option<JoinHandle<Marked>> = None;
        let mut account = |r: Result<Marked, tokio::task::JoinError>| match r {
            Ok(Ok(outcomes)) => {
                for (id, o) in outcomes {
                    match o {
                        Outcome::Sent(_) => sent += 1,
                        Outcome::Failed(e) => {
                            failed += 1;
                            last_error = Some((id, e));
                        }
                    }
                }
                (sent, failed, last_error.clone())
            }
            Ok(Err(e)) => {
                // The rows keep their leases and go out again after them.
                tracing::warn!(error = %e, "outbox relay could not mark a round");
                last_error = Some((0, e.to_string()));
                (sent, failed, last_error.clone())
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox mark task failed");
                (sent, failed, last_error.clone())
            }
        };
        loop {
            let stopping = *stop.borrow();
            let round = if stopping {
                Ok(Vec::new())
            } else {
                this.send_round().await
            };
            let mut counters = None;
            if let Some(h) = marking.take() {
                counters = Some(account(h.await));
            }
            let did = match round {
                Ok(done) if !done.is_empty() => {
                    let core = this.clone();
                    marking = Some(tokio::spawn(async move {
                        core.mark(&done).await?;
                        Ok(done.into_iter().map(|(id, _, o)| (id, o)).collect())
                    }));
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay round failed");
                    counters = Some(account(Ok(Err(e))));
                    tokio::select! {
                        _ = tokio::time::sleep(DB_BACKOFF) => {}
                        _ = stop.changed() => {}
                    }
                    false
                }
            };
            if stopping && marking.is_none() {
                break;
            }
            if let Some((sent, failed, last_error)) = counters {
                // Counters at once; the table's counts (a scan) once a second.
                this.stats.send_modify(|st| {
                    st.sent = sent;
                    st.failed_attempts = failed;
                    st.last_error = last_error;
                });
            }
            if last_stats.elapsed() >= STATS_EVERY {
                if let Ok(s) = super::status(&this.pool).await {
                    this.stats.send_modify(|st| {
                        st.pending = s.pending;
                        st.parked = s.parked;
                        st.oldest_pending_ms = s.oldest_pending_ms;
                    });
                }
                last_stats = tokio::time::Instant::now();
            }
            if last_clean.elapsed() >= clean_every {
                this.clean().await;
                last_clean = tokio::time::Instant::now();
            }
            if !did {
                tokio::select! {
                    _ = tokio::time::sleep(this.opts.poll_interval) => {}
                    _ = wake.notified() => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Claims a batch and sends it: `(row, attempt, outcome)` per row,
    /// to be marked.
    async fn send_round(&self) -> Result<Vec<(i64, i64, Outcome)>, OutboxError> {
        let rows = self.claim().await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut sends = JoinSet::new();
        for row in rows {
            let producer = self.producer.clone();
            sends.spawn(async move {
                let outcome = match row.message {
                    Err(e) => Outcome::Failed(e),
                    Ok(mut m) => {
                        m.properties.insert(PROP_OUTBOX_ROW.into(), row.id.to_string());
                        m.properties.insert(PROP_OUTBOX_ATTEMPT.into(), row.attempt.to_string());
                        match producer.send(&row.topic, m).await {
                            Ok(r) if r.status == SendStatus::SendOk => Outcome::Sent(r.id),
                            Ok(r) => Outcome::Failed(format!("broker answered {} for {}", r.status, r.id)),
                            Err(e) => Outcome::Failed(e.to_string()),
                        }
                    }
                };
                (row.id, row.attempt, outcome)
            });
        }
        let mut done = Vec::new();
        while let Some(r) = sends.join_next().await {
            match r {
                Ok(x) => done.push(x),
                // A send task cannot panic short of a bug; its row keeps
                // its lease and is sent again when the lease runs out.
                Err(e) => tracing::error!(error = %e, "outbox send task failed"),
            }
        }
        if self.opts.halt_before_mark {
            let sent = done.iter().filter(|(_, _, o)| matches!(o, Outcome::Sent(_))).count();
            eprintln!("outbox relay: halting before marking {sent} sent row(s)");
            std::future::pending::<()>().await;
        }
        Ok(done)
    }

    async fn claim(&self) -> Result<Vec<Claimed>, OutboxError> {
        let now = now_ms();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE waybill_outbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT o.id FROM waybill_outbox o WHERE o.status = 'pending' AND o.next_attempt_at <= $3 \
             AND (o.lease_until IS NULL OR o.lease_until < $4) \
             AND (o.msg_key IS NULL OR NOT EXISTS (SELECT 1 FROM waybill_outbox p WHERE p.msg_key = o.msg_key \
             AND p.id < o.id AND p.status <> 'sent')) ORDER BY o.id LIMIT $5{lock}) \
             RETURNING id, topic, msg_key, tags, properties, body, created_at, attempts"
        );
        let rows: Vec<AnyRow> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&self.opts.name)
            .bind(now + self.opts.lease.as_millis() as i64)
            .bind(now)
            .bind(now)
            .bind(i64::from(self.opts.batch.max(1)))
            .fetch_all(&self.pool)
            .await
            .map_err(SqlError::db("cannot claim outbox rows"))?;
        let mut out: Vec<Claimed> = rows.iter().map(claimed).collect();
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    /// Marks every attempt's outcome in one transaction: the sent rows in
    /// one statement (a round trip per row cost more than the sends), the
    /// failed ones (rare) one by one.
    async fn mark(&self, done: &[(i64, i64, Outcome)]) -> Result<(), OutboxError> {
        let now = now_ms();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(SqlError::db("cannot begin marking outbox rows"))?;
        let sent: Vec<(i64, &str)> = done
            .iter()
            .filter_map(|(id, _, o)| match o {
                Outcome::Sent(mid) => Some((*id, mid.as_str())),
                Outcome::Failed(_) => None,
            })
            .collect();
        for chunk in sent.chunks(MARK_CHUNK) {
            // `CAST` (not `::`) so one text serves SQLite and PostgreSQL.
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(CAST(${} AS BIGINT), CAST(${} AS TEXT))", 2 * i + 2, 2 * i + 3))
                .collect();
            let sql = format!(
                "WITH v(id, mid) AS (VALUES {}) UPDATE waybill_outbox SET status = 'sent', sent_at = $1, \
                 message_id = (SELECT mid FROM v WHERE v.id = waybill_outbox.id), lease_owner = NULL, \
                 lease_until = NULL, last_error = NULL WHERE id IN (SELECT id FROM v)",
                values.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for (id, mid) in chunk {
                q = q.bind(*id).bind(mid.to_string());
            }
            q.execute(&mut *tx)
                .await
                .map_err(SqlError::db("cannot mark outbox rows sent"))?;
        }
        for (id, attempt, outcome) in done {
            let Outcome::Failed(error) = outcome else {
                continue;
            };
            let parked = *attempt >= i64::from(self.opts.max_attempts);
            sqlx::query(
                "UPDATE waybill_outbox SET status = $1, next_attempt_at = $2, last_error = $3, lease_owner = NULL, \
                 lease_until = NULL WHERE id = $4 AND status = 'pending'",
            )
            .bind(if parked { "parked" } else { "pending" })
            .bind(now + backoff(self.opts.backoff_min, self.opts.backoff_max, *attempt).as_millis() as i64)
            .bind(format!("attempt {attempt}: {}", crate::consumer::tail(error, 2000)))
            .bind(*id)
            .execute(&mut *tx)
            .await
            .map_err(SqlError::db(format!("cannot mark outbox row {id}")))?;
        }
        tx.commit()
            .await
            .map_err(SqlError::db("cannot commit the outbox marks"))?;
        Ok(())
    }

    async fn clean(&self) {
        let cutoff = now_ms() - self.opts.retention.as_millis() as i64;
        if let Err(e) = sqlx::query("DELETE FROM waybill_outbox WHERE status = 'sent' AND sent_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "cannot delete old sent outbox rows");
        }
    }
}

/// Wait after attempt `attempt` (1-based) failed: `min` doubling per
/// attempt, at most `max`.
fn backoff(min: Duration, max: Duration, attempt: i64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    min.saturating_mul(1u32 << doublings).min(max)
}

fn claimed(r: &AnyRow) -> Claimed {
    let id: i64 = r.try_get("id").unwrap_or_default();
    let props: String = r.try_get("properties").unwrap_or_default();
    let message = properties_from_text(&props).map(|properties| Message {
        key: r.try_get::<Option<String>, _>("msg_key").ok().flatten(),
        tags: r.try_get::<Option<String>, _>("tags").ok().flatten(),
        producer: None,
        properties,
        body: r.try_get::<Vec<u8>, _>("body").unwrap_or_default(),
        born_ms: r.try_get("created_at").unwrap_or_default(),
    });
    Claimed {
        id,
        topic: r.try_get("topic").unwrap_or_default(),
        attempt: r.try_get("attempts").unwrap_or_default(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_render_as_prometheus_text() {
        let s = RelayStats {
            pending: 3,
            parked: 1,
            oldest_pending_ms: Some(2500),
            sent: 10,
            failed_attempts: 2,
            last_error: None,
        };
        let text = s.prometheus("shop \"1\"");
        assert!(
            text.contains("waybill_outbox_pending{relay=\"shop \\\"1\\\"\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("waybill_outbox_oldest_pending_seconds{relay=\"shop \\\"1\\\"\"} 2.5\n"),
            "{text}"
        );
        assert!(
            text.contains("waybill_outbox_sent_total{relay=\"shop \\\"1\\\"\"} 10\n"),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 5);
    }

    #[test]
    fn backoff_doubles_from_min_to_max() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(min, max, 1), Duration::from_millis(100));
        assert_eq!(backoff(min, max, 3), Duration::from_millis(400));
        assert_eq!(backoff(min, max, 5), Duration::from_secs(1));
        assert_eq!(backoff(min, max, i64::MAX), Duration::from_secs(1));
        assert_eq!(backoff(min, max, 0), Duration::from_millis(100));
    }
}
