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

use sqlx::AnyPool;

use super::db::{int, text};
use super::TraceError;
use crate::storage::{DamageKind, Store};

/// What one audit found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub checked: u64,
    pub lost: Vec<String>,
}

/// `cut_at`: where replication cut this log at start (a former primary
/// rejoining): acknowledged messages past it are lost at `replicate`.
pub async fn run(pool: &AnyPool, store: &Store, cut_at: Option<u64>) -> Result<AuditReport, TraceError> {
    let node = i64::from(store.node_id());
    let stats = store.stats();
    let log_end = stats.log_end as i64;
    let now = chrono::Utc::now().timestamp_millis();
    let mut report = AuditReport::default();
    // Ids sort as node | epoch | position (fixed-width hex), so for each
    // earlier boot the frames past the recovered end are one range of the
    // primary key: no scan of the whole table.
    let mut candidates = Vec::new();
    for epoch in 1..store.epoch() {
        let from = format!("{:04X}{:08X}{:016X}", store.node_id(), epoch, log_end.max(0) as u64);
        let to = format!("{:04X}{:08X}", store.node_id(), epoch.saturating_add(1));
        let rows = sqlx::query(
            "SELECT id, pos, end_pos, flush_mode FROM trace_messages WHERE id >= $1 AND id < $2 \
             AND send_status = 'SEND_OK' AND end_pos > $3",
        )
        .bind(from)
        .bind(to)
        .bind(log_end)
        .fetch_all(pool)
        .await?;
        candidates.extend(
            rows.into_iter()
                .map(|r| (text(&r, "id"), int(&r, "pos"), text(&r, "flush_mode"), false)),
        );
    }
    for d in store.damage().iter().filter(|d| d.kind == DamageKind::Corrupt) {
        let rows = sqlx::query(
            "SELECT id, pos, flush_mode FROM trace_messages WHERE node = $1 AND send_status = 'SEND_OK' \
             AND pos >= $2 AND pos < $3",
        )
        .bind(node)
        .bind(d.from as i64)
        .bind(d.to as i64)
        .fetch_all(pool)
        .await?;
        candidates.extend(
            rows.into_iter()
                .map(|r| (text(&r, "id"), int(&r, "pos"), text(&r, "flush_mode"), true)),
        );
    }
    for (id, pos, flush_mode, corrupt) in candidates {
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
            .bind(&id)
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
        } else if flush_mode == "async" {
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
            "INSERT INTO trace_events (message_id, stage, at, node, grp, outcome, detail) \
             VALUES ($1, $2, $3, $4, NULL, 'lost', $5)",
        )
        .bind(&id)
        .bind(stage)
        .bind(now)
        .bind(node)
        .bind(&reason)
        .execute(pool)
        .await?;
        tracing::warn!(%id, stage, "audit: acknowledged message lost");
        report.lost.push(id);
    }
    if !report.lost.is_empty() {
        tracing::warn!(
            lost = report.lost.len(),
            "audit found acknowledged messages missing from the log"
        );
    }
    Ok(report)
}
