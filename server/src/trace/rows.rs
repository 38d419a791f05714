//! A batch of trace events as rows: multi-row inserts of runs, message
//! events, deliveries and commits (with the inbox a commit declared and the
//! duplicates it suppressed), plus the watermark rows of a round.
//!
//! Everything here runs inside the writer's transaction for one round, so
//! a batch, its watermarks, its gap row and the writer's mark commit
//! together or not at all.

use sqlx::{AnyConnection, AssertSqlSafe};

use super::db::{values, Backend};
use super::event::{MessageEvent, Stored, TraceEvent};
use super::TraceError;

/// Most rows per insert (bounded by the databases' bind-parameter limits:
/// 18 columns × 1000 rows stays under SQLite's 32,766 and PostgreSQL's
/// 65,535).
pub const MAX_ROWS: usize = 1000;

/// Inserts `batch`'s rows.
pub async fn insert(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[TraceEvent],
    node: u16,
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
    let runs = super::runs::build(stored.iter().copied());
    for chunk in runs.chunks(MAX_ROWS) {
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
        q.execute(&mut *conn).await?;
    }
    for chunk in events.chunks(MAX_ROWS) {
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
                .bind(e.stage.as_str())
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
        q.execute(&mut *conn).await?;
    }
    for chunk in deliveries.chunks(MAX_ROWS) {
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
        q.execute(&mut *conn).await?;
    }
    for chunk in commits.chunks(MAX_ROWS) {
        let sql = format!(
            "INSERT INTO trace_commits (grp, topic, queue_id, queue_offset, at, auto_commit, handled, dedupe_window, \
             duplicates, duplicate_count) VALUES {}",
            values(backend, chunk.len(), 10)
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
                dedupe_window_ms,
                handled,
                duplicates,
            } = ev
            {
                // NULL when the commit suppressed nothing: the per-group
                // count reads only rows through a partial index.
                let (dups, dup_count) = if duplicates.is_empty() {
                    (None, None)
                } else {
                    (
                        Some(super::varint::encode_duplicates(duplicates)),
                        Some(duplicates.len() as i64),
                    )
                };
                q = q
                    .bind(group.clone())
                    .bind(topic.clone())
                    .bind(i64::from(*queue_id))
                    .bind(*offset as i64)
                    .bind(*at_ms)
                    .bind(i64::from(*auto_commit))
                    .bind(super::varint::encode_handled(handled))
                    .bind(dedupe_window_ms.map(|w| i64::try_from(w).unwrap_or(i64::MAX)))
                    .bind(dups)
                    .bind(dup_count);
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Watermark rows for what moved this round: the flushed position, and
/// each replica's confirmed position.
pub async fn watermarks(
    conn: &mut AnyConnection,
    node: u16,
    now: i64,
    flushed: Option<u64>,
    replicated: &[(u16, u64)],
) -> Result<(), TraceError> {
    if let Some(pos) = flushed {
        sqlx::query("INSERT INTO trace_watermarks (node, kind, position, at) VALUES ($1, 'flushed', $2, $3)")
            .bind(i64::from(node))
            .bind(pos as i64)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    for (replica, pos) in replicated {
        sqlx::query("INSERT INTO trace_watermarks (node, kind, position, at) VALUES ($1, $2, $3, $4)")
            .bind(i64::from(node))
            .bind(format!("replicated:{replica}"))
            .bind(*pos as i64)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
