//! The writer task: drains the trace queue into the database in batches.
//!
//! A batch is whatever arrived within [`BATCH_WINDOW`] of its first event
//! (at most [`MAX_BATCH`] events), taken after the window in one go (the
//! writer is not woken per event), written in one transaction with
//! multi-row inserts. Each round also samples the store's flushed
//! watermark (one row when it moved) and writes a gap row when events were
//! shed since the last round. A failed write is logged and its events are
//! counted as shed: the tracer degrades, the broker never waits for it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, AssertSqlSafe};
use tokio::sync::{mpsc, watch};

use super::db::{values, Backend};
use super::event::{MessageEvent, Stored, TraceEvent};
use super::{Shared, TraceError};
use crate::storage::Store;

/// How long a batch collects after its first event.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most events per batch and rows per insert (bounded by the databases'
/// bind-parameter limits: 18 columns × 1000 rows stays under SQLite's
/// 32,766 and PostgreSQL's 65,535).
const MAX_BATCH: usize = 1000;
/// Watermark sampling period when no events arrive.
const IDLE_TICK: Duration = Duration::from_millis(100);

pub(crate) async fn run(
    pool: AnyPool,
    backend: Backend,
    mut rx: mpsc::Receiver<TraceEvent>,
    shared: Arc<Shared>,
    written: watch::Sender<u64>,
    store: Arc<Store>,
    node: u16,
) {
    let mut last_flushed = u64::MAX;
    let mut last_replicated: std::collections::BTreeMap<u16, u64> = std::collections::BTreeMap::new();
    let mut total = 0u64;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::time::timeout(IDLE_TICK, rx.recv()).await;
        match first {
            Ok(Some(ev)) => {
                batch.push(ev);
                // Sleep through the window, then take what queued up: no
                // wake-up per event (each would cost the broker a task
                // switch on a busy core).
                tokio::time::sleep(BATCH_WINDOW).await;
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(ev) => batch.push(ev),
                        Err(_) => break,
                    }
                }
            }
            Ok(None) => return,
            Err(_) => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        let flushed = store.stats().flushed;
        let watermark = (flushed != last_flushed).then_some(flushed);
        let shed_since = shared.shed_since.swap(0, Ordering::Relaxed);
        let replicated: Vec<(u16, u64)> = shared
            .replicated
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(id, pos)| last_replicated.get(id) != Some(pos))
                    .map(|(id, pos)| (*id, *pos))
                    .collect()
            })
            .unwrap_or_default();
        let n = batch.len() as u64;
        let marks = Watermarks {
            flushed: watermark,
            replicated: &replicated,
        };
        if let Err(e) = write(&pool, backend, &batch, node, now, marks, shed_since, &shared).await {
            tracing::warn!(error = %e, events = n, "trace write failed; events dropped");
            shared.shed.fetch_add(n, Ordering::Relaxed);
        } else {
            if let Some(f) = watermark {
                last_flushed = f;
            }
            last_replicated.extend(replicated);
        }
        batch.clear();
        total += n;
        written.send_replace(total);
    }
}

/// Watermarks that moved since the last round.
struct Watermarks<'a> {
    flushed: Option<u64>,
    /// `(replica, confirmed position)`.
    replicated: &'a [(u16, u64)],
}

#[allow(clippy::too_many_arguments)]
async fn write(
    pool: &AnyPool,
    backend: Backend,
    batch: &[TraceEvent],
    node: u16,
    now: i64,
    marks: Watermarks<'_>,
    shed_since: i64,
    shared: &Shared,
) -> Result<(), TraceError> {
    let mut stored: Vec<&Stored> = Vec::new();
    let mut events: Vec<&MessageEvent> = Vec::new();
    let mut deliveries = Vec::new();
    let mut commits = Vec::new();
    for ev in batch {
        match ev {
            TraceEvent::Stored(s) => stored.push(s),
            TraceEvent::Message(m) => events.push(m),
            TraceEvent::Delivered { .. } => deliveries.push(ev),
            TraceEvent::Committed { .. } => commits.push(ev),
        }
    }
    let node = i64::from(node);
    let mut tx = pool.begin().await?;
    let runs = super::runs::build(stored.iter().copied());
    for chunk in runs.chunks(MAX_BATCH) {
        let sql = format!(
            "INSERT INTO trace_runs (node, epoch, pos_from, pos_to, msg_count, topic, stored_from, stored_to, \
             acked_to, send_mode, send_status, flush_mode, replication, entries) VALUES {} \
             ON CONFLICT (node, epoch, pos_from) DO NOTHING",
            values(backend, chunk.len(), 14)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in chunk {
            let r = &b.run;
            q = q
                .bind(i64::from(r.node))
                .bind(i64::from(r.epoch))
                .bind(r.pos_from as i64)
                .bind(r.pos_to as i64)
                .bind(b.count as i64)
                .bind(r.topic.clone())
                .bind(r.stored_from)
                .bind(r.stored_to)
                .bind(b.acked_to)
                .bind(r.send_mode.clone())
                .bind(r.send_status.clone())
                .bind(r.flush_mode.clone())
                .bind(r.replication.clone())
                .bind(b.entries.clone());
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in events.chunks(MAX_BATCH) {
        let sql = format!(
            "INSERT INTO trace_events (message_id, stage, at, node, grp, outcome, detail, record_id, rec_topic, \
             rec_queue, rec_offset, attempt) VALUES {}",
            values(backend, chunk.len(), 12)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for e in chunk {
            let r = e.record.as_ref();
            q = q
                .bind(e.message_id.clone())
                .bind(e.stage)
                .bind(e.at_ms)
                .bind(node)
                .bind(e.group.clone())
                .bind(e.outcome)
                .bind(e.detail.clone())
                .bind(r.map(|r| r.id.clone()))
                .bind(r.map(|r| r.topic.clone()))
                .bind(r.map(|r| i64::from(r.queue_id)))
                .bind(r.map(|r| r.queue_offset as i64))
                .bind(e.attempt.map(i64::from));
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in deliveries.chunks(MAX_BATCH) {
        let sql = format!(
            "INSERT INTO trace_deliveries (grp, topic, queue_id, from_offset, to_offset, at, node) VALUES {}",
            values(backend, chunk.len(), 7)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for ev in chunk {
            if let TraceEvent::Delivered {
                group,
                topic,
                queue_id,
                from,
                to,
                at_ms,
            } = ev
            {
                q = q
                    .bind(group.clone())
                    .bind(topic.clone())
                    .bind(i64::from(*queue_id))
                    .bind(*from as i64)
                    .bind(*to as i64)
                    .bind(*at_ms)
                    .bind(node);
            }
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in commits.chunks(MAX_BATCH) {
        let sql = format!(
            "INSERT INTO trace_commits (grp, topic, queue_id, queue_offset, at, auto_commit, handled) VALUES {}",
            values(backend, chunk.len(), 7)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for ev in chunk {
            if let TraceEvent::Committed {
                group,
                topic,
                queue_id,
                offset,
                at_ms,
                auto_commit,
                handled,
            } = ev
            {
                q = q
                    .bind(group.clone())
                    .bind(topic.clone())
                    .bind(i64::from(*queue_id))
                    .bind(*offset as i64)
                    .bind(*at_ms)
                    .bind(i64::from(*auto_commit))
                    .bind(super::varint::encode_handled(handled));
            }
        }
        q.execute(&mut *tx).await?;
    }
    if let Some(pos) = marks.flushed {
        sqlx::query("INSERT INTO trace_watermarks (node, kind, position, at) VALUES ($1, 'flushed', $2, $3)")
            .bind(node)
            .bind(pos as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    for (replica, pos) in marks.replicated {
        sqlx::query("INSERT INTO trace_watermarks (node, kind, position, at) VALUES ($1, $2, $3, $4)")
            .bind(node)
            .bind(format!("replicated:{replica}"))
            .bind(*pos as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    if shed_since != 0 {
        let dropped = shared.shed.load(Ordering::Relaxed) as i64;
        sqlx::query("INSERT INTO trace_gaps (node, from_at, to_at, dropped) VALUES ($1, $2, $3, $4)")
            .bind(node)
            .bind(shed_since)
            .bind(now)
            .bind(dropped)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
