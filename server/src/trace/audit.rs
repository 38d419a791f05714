//! The audit: which acknowledged messages did a crash take?
//!
//! Run at start, after recovery and before new writes. Every message this
//! node acknowledged with `SEND_OK` in an earlier boot (older epoch) whose
//! frame ends past the recovered log end is gone: it becomes `lost` at the
//! stage that lost it — `flush` when it was acknowledged under async flush
//! (acked after the write, the power went before the fsync), `store` when
//! it was acknowledged after an fsync (then only a storage fault explains
//! it). Messages inside regions recovery reported corrupt are lost at
//! `store` too. Messages cut from the log when this node rejoined a
//! replication group (they never reached the new primary) are lost at
//! `replicate`. A message already marked lost is not marked twice.
//!
//! Limit: a message whose trace row was shed or not yet written when the
//! process died is unknown to the audit (the trace says so with a gap).

use sqlx::{AnyPool, AssertSqlSafe};

use super::runs::{self, Entry, Run};
use super::TraceError;
use crate::storage::{DamageKind, Store};

/// What one audit found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub checked: u64,
    pub lost: Vec<String>,
}

/// An acknowledged message the log may have lost.
struct Candidate {
    id: String,
    pos: u64,
    topic: String,
    key: Option<String>,
    queue_id: u32,
    queue_offset: u64,
    flush_mode: String,
    /// Inside a region recovery found corrupt.
    corrupt: bool,
}

impl Candidate {
    fn new(run: &Run, e: Entry, corrupt: bool) -> Candidate {
        Candidate {
            id: e.id(run).to_string(),
            pos: e.pos,
            topic: run.topic.clone(),
            key: e.key,
            queue_id: e.queue_id,
            queue_offset: e.queue_offset,
            flush_mode: run.flush_mode.clone(),
            corrupt,
        }
    }
}

/// `cut_at`: where replication cut this log at start (a former primary
/// rejoining): acknowledged messages past it are lost at `replicate`.
pub async fn run(pool: &AnyPool, store: &Store, cut_at: Option<u64>) -> Result<AuditReport, TraceError> {
    let node = i64::from(store.node_id());
    let stats = store.stats();
    let log_end = stats.log_end as i64;
    let now = chrono::Utc::now().timestamp_millis();
    let mut report = AuditReport::default();
    // Runs of earlier boots reaching past the recovered end: one range of
    // the (node, epoch, pos_from) index per boot, no scan of the table.
    let mut candidates: Vec<Candidate> = Vec::new();
    for epoch in 1..store.epoch() {
        let sql = format!(
            "SELECT {} FROM trace_runs WHERE node = $1 AND epoch = $2 AND pos_to > $3 AND send_status = 'SEND_OK'",
            runs::COLUMNS
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(node)
            .bind(i64::from(epoch))
            .bind(log_end)
            .fetch_all(pool)
            .await?;
        for r in &rows {
            let (run, entries) = runs::from_row(r);
            for e in entries.into_iter().filter(|e| e.end as i64 > log_end) {
                candidates.push(Candidate::new(&run, e, false));
            }
        }
    }
    for d in store.damage().iter().filter(|d| d.kind == DamageKind::Corrupt) {
        let sql = format!(
            "SELECT {} FROM trace_runs WHERE node = $1 AND pos_to > $2 AND pos_from < $3 AND send_status = 'SEND_OK'",
            runs::COLUMNS
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(node)
            .bind(d.from as i64)
            .bind(d.to as i64)
            .fetch_all(pool)
            .await?;
        for r in &rows {
            let (run, entries) = runs::from_row(r);
            for e in entries.into_iter().filter(|e| e.pos >= d.from && e.pos < d.to) {
                candidates.push(Candidate::new(&run, e, true));
            }
        }
    }
    for c in candidates {
        let Candidate {
            id,
            pos,
            flush_mode,
            corrupt,
            ..
        } = &c;
        let (pos, corrupt) = (*pos as i64, *corrupt);
        report.checked += 1;
        // Ids embed the epoch: only earlier boots can have lost messages.
        let epoch = id
            .get(4..12)
            .and_then(|e| u32::from_str_radix(e, 16).ok())
            .unwrap_or(u32::MAX);
        if epoch >= store.epoch() {
            continue;
        }
        let already = sqlx::query("SELECT 1 AS one FROM trace_events WHERE message_id = $1 AND outcome = 'lost'")
            .bind(id)
            .fetch_optional(pool)
            .await?;
        if already.is_some() {
            continue;
        }
        let (stage, reason) = if cut_at.is_some_and(|c| pos >= c as i64) && !corrupt {
            (
                "replicate",
                "acknowledged before a replica had it (async replication); the node that took over as primary never \
                 got it, so it was cut from this log when this node rejoined as a replica"
                    .to_string(),
            )
        } else if corrupt {
            (
                "store",
                "acknowledged, but its record is corrupt on disk: not served".to_string(),
            )
        } else if flush_mode.as_str() == "async" {
            (
                "flush",
                "acknowledged after the write (async flush) but not fsynced before the crash: absent from the log \
                 after recovery"
                    .to_string(),
            )
        } else {
            (
                "store",
                "acknowledged after an fsync but absent from the log after recovery: storage fault".to_string(),
            )
        };
        sqlx::query(
            "INSERT INTO trace_events (message_id, stage, at, node, grp, outcome, detail, record_id, rec_topic, \
             rec_queue, rec_offset, msg_key) VALUES ($1, $2, $3, $4, NULL, 'lost', $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(stage)
        .bind(now)
        .bind(node)
        .bind(&reason)
        .bind(id)
        .bind(c.topic.clone())
        .bind(i64::from(c.queue_id))
        .bind(c.queue_offset as i64)
        .bind(c.key.clone())
        .execute(pool)
        .await?;
        tracing::warn!(%id, stage, "audit: acknowledged message lost");
        report.lost.push(c.id);
    }
    if !report.lost.is_empty() {
        tracing::warn!(
            lost = report.lost.len(),
            "audit found acknowledged messages missing from the log"
        );
    }
    Ok(report)
}
