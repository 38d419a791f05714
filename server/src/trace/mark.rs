//! Progress marks and gap rows: what the writer commits beside each batch
//! so that, after a crash, the audit can say what may have gone unrecorded.
//!
//! A **mark** is one row per (node, boot epoch), overwritten in the same
//! transaction as every batch (and every idle round). Its `covered_at` is a
//! time before which every event the tracer accepted is written: the writer
//! reads the clock *before* draining the queue and, when the drain found the
//! queue empty, anything it did not take was pushed after that reading — so
//! after that time, since the broker records a send before answering it.
//! When a drain stops at the batch limit, `covered_at` stays where it was.
//!
//! A **gap** counts events the tracer dropped: shed because its queue was
//! full (the broker made those sends durable under async flush, see
//! `broker/traced.rs`), or a batch the trace store refused while it still
//! took a mark (a batch it cannot store, not a store that is down: that
//! batch is kept and retried). A refused batch's acknowledged-but-unsynced
//! messages are `at_risk`, with their log range and times, so the audit can
//! turn them into a window if a crash takes them.

use sqlx::AnyConnection;

use super::event::TraceEvent;
use super::TraceError;

/// Events dropped since the last gap row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gap {
    pub from_ms: i64,
    pub to_ms: i64,
    pub events: u64,
    /// Messages the dropped `Stored` events held.
    pub messages: u64,
    /// Of those, acknowledged without an fsync behind them (refused
    /// batches only), at log positions `[pos_from, pos_to)`.
    pub at_risk: u64,
    pub pos_from: u64,
    pub pos_to: u64,
}

impl Gap {
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Counts `events` dropped at `at` holding `messages`.
    pub fn note(&mut self, at: i64, events: u64, messages: u64) {
        if self.events == 0 {
            self.from_ms = at;
        }
        self.from_ms = self.from_ms.min(at);
        self.to_ms = self.to_ms.max(at);
        self.events += events;
        self.messages += messages;
    }

    /// Adds `other` (a gap taken for a write that failed goes back).
    pub fn merge(&mut self, other: &Gap) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other.clone();
            return;
        }
        self.from_ms = self.from_ms.min(other.from_ms);
        self.to_ms = self.to_ms.max(other.to_ms);
        self.events += other.events;
        self.messages += other.messages;
        if other.at_risk > 0 {
            if self.at_risk == 0 {
                (self.pos_from, self.pos_to) = (other.pos_from, other.pos_to);
            }
            self.pos_from = self.pos_from.min(other.pos_from);
            self.pos_to = self.pos_to.max(other.pos_to);
            self.at_risk += other.at_risk;
        }
    }

    /// The gap a batch leaves when the trace store refuses it; `now` dates
    /// events that carry no time of their own.
    pub fn of_batch(batch: &[TraceEvent], now: i64) -> Gap {
        let mut g = Gap::default();
        for ev in batch {
            let TraceEvent::Stored(s) = ev else {
                g.note(now, 1, 0);
                continue;
            };
            g.note(s.acked_ms, 1, s.messages.len() as u64);
            for m in s.messages.iter().filter(|m| s.at_risk(m)) {
                if g.at_risk == 0 {
                    (g.pos_from, g.pos_to) = (m.pos, m.end);
                }
                g.pos_from = g.pos_from.min(m.pos);
                g.pos_to = g.pos_to.max(m.end);
                g.at_risk += 1;
            }
        }
        g
    }
}

/// The writer's progress in one boot, as of one committed round.
#[derive(Debug, Clone)]
pub struct Mark {
    pub epoch: u32,
    /// When this boot's tracer started (kept from the first mark on).
    pub first_at: i64,
    pub at: i64,
    pub covered_at: i64,
    pub log_end: u64,
    pub flushed: u64,
    /// `sync` or `async`: the store's flush mode.
    pub flush_mode: &'static str,
    pub max_unwritten: u64,
    /// The node shut down cleanly: every acknowledged message is fsynced.
    pub closed: bool,
}

/// Inserts or overwrites this boot's mark.
pub async fn write_mark(conn: &mut AnyConnection, node: u16, m: &Mark) -> Result<(), TraceError> {
    sqlx::query(
        "INSERT INTO trace_marks (node, epoch, first_at, at, covered_at, log_end, flushed, flush_mode, \
         max_unwritten, closed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (node, epoch) DO UPDATE SET at = excluded.at, covered_at = excluded.covered_at, \
         log_end = excluded.log_end, flushed = excluded.flushed, flush_mode = excluded.flush_mode, \
         max_unwritten = excluded.max_unwritten, closed = excluded.closed",
    )
    .bind(i64::from(node))
    .bind(i64::from(m.epoch))
    .bind(m.first_at)
    .bind(m.at)
    .bind(m.covered_at)
    .bind(m.log_end as i64)
    .bind(m.flushed as i64)
    .bind(m.flush_mode)
    .bind(m.max_unwritten as i64)
    .bind(i64::from(m.closed))
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes one gap row for `g` (nothing when it is empty).
pub async fn write_gap(conn: &mut AnyConnection, node: u16, epoch: u32, g: &Gap) -> Result<(), TraceError> {
    if g.is_empty() {
        return Ok(());
    }
    let range = |p: u64| (g.at_risk > 0).then_some(p as i64);
    sqlx::query(
        "INSERT INTO trace_gaps (node, epoch, from_at, to_at, dropped, messages, at_risk, pos_from, pos_to) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(i64::from(node))
    .bind(i64::from(epoch))
    .bind(g.from_ms)
    .bind(g.to_ms)
    .bind(g.events as i64)
    .bind(g.messages as i64)
    .bind(g.at_risk as i64)
    .bind(range(g.pos_from))
    .bind(range(g.pos_to))
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Gap;
    use crate::trace::event::{Stored, StoredMsg, TraceEvent};

    fn stored(flush_mode: &'static str, send_mode: &'static str, pos: &[u64]) -> TraceEvent {
        TraceEvent::Stored(Box::new(Stored {
            topic: "t".into(),
            messages: pos
                .iter()
                .map(|p| StoredMsg {
                    node: 1,
                    epoch: 1,
                    pos: *p,
                    end: p + 10,
                    queue_id: 0,
                    queue_offset: 0,
                    born_ms: 5,
                    stored_ms: 6,
                    key: None,
                    send_mode,
                    attempt: 1,
                    traceparent: None,
                })
                .collect(),
            acked_ms: 7,
            flush_mode,
            send_status: "SEND_OK",
            replication: "none",
        }))
    }

    #[test]
    fn a_refused_batch_counts_only_unsynced_acknowledged_messages_as_at_risk() {
        let batch = [
            stored("async", "sync", &[100, 110]),
            stored("sync", "sync", &[0]),
            stored("async", "oneway", &[200]),
        ];
        let g = Gap::of_batch(&batch, 9);
        assert_eq!((g.events, g.messages, g.at_risk), (3, 4, 2));
        assert_eq!((g.pos_from, g.pos_to), (100, 120));
        assert_eq!((g.from_ms, g.to_ms), (7, 7));
    }

    #[test]
    fn merging_keeps_the_widest_range_and_sums_counts() {
        let mut a = Gap::default();
        a.note(50, 2, 3);
        let b = Gap::of_batch(&[stored("async", "sync", &[300])], 9);
        a.merge(&b);
        assert_eq!((a.from_ms, a.to_ms, a.events, a.messages, a.at_risk), (7, 50, 3, 4, 1));
        assert_eq!((a.pos_from, a.pos_to), (300, 310));
        let mut empty = Gap::default();
        empty.merge(&Gap::default());
        assert!(empty.is_empty());
    }
}
