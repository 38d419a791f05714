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
//! A message whose trace row was not yet written when the process died
//! cannot be named; [`super::windows`] reports where such messages may be
//! (time range, log positions, an upper bound on their count).
//!
//! The audit runs in the background once the trace store answers, while
//! the node already serves: it compares with the log end recovery left
//! ([`Start::recovered_end`]), never with the growing one. An earlier boot
//! that was never audited (the trace store was away all along) is compared
//! with where the next boot started writing ([`super::windows::boot_end`]).

use sqlx::{AnyPool, AssertSqlSafe};

use super::runs::{self, Entry, Run};
use super::windows::{self, Window};
use super::TraceError;
use crate::model::Stage;
use crate::storage::{DamageKind, Store};

/// What the audit needs to know about this boot, taken before it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The log end recovery (and a replication cut) left, before any write.
    pub recovered_end: u64,
    /// Where replication cut this log at start (a former primary
    /// rejoining): acknowledged messages past it are lost at `replicate`.
    pub cut_at: Option<u64>,
    /// When this boot started (ms): every earlier boot ended before it.
    pub started_ms: i64,
}

impl Start {
    /// For a store just opened (or cut), before anything is appended.
    pub fn at_open(store: &Store, cut_at: Option<u64>) -> Start {
        Start {
            recovered_end: store.stats().log_end,
            cut_at,
            started_ms: crate::time::now_ms(),
        }
    }
}

/// What one audit found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub checked: u64,
    pub lost: Vec<String>,
    /// Loss windows found by this audit (earlier audits' stay stored).
    pub windows: Vec<Window>,
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

/// Marks what earlier boots acknowledged and the log no longer holds, then
/// reports the loss windows of boots not audited before.
pub async fn run(pool: &AnyPool, store: &Store, start: &Start) -> Result<AuditReport, TraceError> {
    let node = i64::from(store.node_id());
    let cut_at = start.cut_at;
    let now = crate::time::now_ms();
    let mut report = AuditReport::default();
    let log_runs = store.runs();
    // Runs of earlier boots reaching past where their boot's data ends: one
    // range of the (node, epoch, pos_from) index per boot, no scan.
    let mut candidates: Vec<Candidate> = Vec::new();
    for epoch in 1..store.epoch() {
        let log_end = windows::boot_end(&log_runs, store.node_id(), epoch, store.epoch(), start) as i64;
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
                Stage::Replicate,
                "acknowledged before a replica had it (async replication); the node that took over as primary never \
                 got it, so it was cut from this log when this node rejoined as a replica"
                    .to_string(),
            )
        } else if corrupt {
            (
                Stage::Store,
                "acknowledged, but its record is corrupt on disk: not served".to_string(),
            )
        } else if flush_mode.as_str() == "async" {
            (
                Stage::Flush,
                "acknowledged after the write (async flush) but not fsynced before the crash: absent from the log \
                 after recovery"
                    .to_string(),
            )
        } else {
            (
                Stage::Store,
                "acknowledged after an fsync but absent from the log after recovery: storage fault".to_string(),
            )
        };
        sqlx::query(
            "INSERT INTO trace_events (message_id, stage, at, node, grp, outcome, detail, record_id, rec_topic, \
             rec_queue, rec_offset, msg_key) VALUES ($1, $2, $3, $4, NULL, 'lost', $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(stage.as_str())
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
        tracing::warn!(%id, stage = stage.as_str(), "audit: acknowledged message lost");
        report.lost.push(c.id);
    }
    report.windows = windows::find(pool, store, start, &log_runs).await?;
    if !report.lost.is_empty() {
        tracing::warn!(
            lost = report.lost.len(),
            "audit found acknowledged messages missing from the log"
        );
    }
    Ok(report)
}
