//! Runs: how the trace stores the "produce" and "store" stages without a
//! row per message.
//!
//! A run is a stretch of one node's log, `[pos_from, pos_to)` in one boot
//! epoch, holding messages of one topic that were answered the same way
//! (send mode, status, flush and replication mode). The log already holds
//! each message's own fields (key, tags, producer, trace context, body);
//! the run adds what only the broker knew — when and how it answered —
//! plus a compact per-message entry list, so that a message the log lost
//! can still be named, dated and found by key.
//!
//! Invariants: within one `(node, epoch)` runs are disjoint and each run's
//! messages are contiguous (every entry starts where the previous ended),
//! so the run holding a position is the one with the greatest `pos_from`
//! at or below it. Entries are varints: length, queue id, queue offset,
//! stored − run start, zigzag(stored − born), acked − stored, the
//! producer's send attempt, key length + 1 (0: no key) and the key's bytes.

use sqlx::any::AnyRow;
use sqlx::AnyPool;

use super::db::{int, text};
use super::event::{Stored, StoredMsg};
use super::varint::{get, put};
use super::TraceError;
use crate::model::MessageId;

/// Most messages one run holds (keeps a run's entry list a few KiB).
pub const MAX_RUN: usize = 1024;

/// What one run row says (everything but the entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub node: u16,
    pub epoch: u32,
    pub pos_from: u64,
    pub pos_to: u64,
    pub topic: String,
    pub stored_from: i64,
    pub stored_to: i64,
    pub send_mode: String,
    pub send_status: String,
    pub flush_mode: String,
    pub replication: String,
}

/// One message of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pos: u64,
    pub end: u64,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub born_ms: i64,
    pub stored_ms: i64,
    pub acked_ms: i64,
    /// Which try of the producer's send stored it (1 = the first).
    pub attempt: u32,
    pub key: Option<String>,
}

impl Entry {
    pub fn id(&self, run: &Run) -> MessageId {
        MessageId {
            node: run.node,
            epoch: run.epoch,
            pos: self.pos,
        }
    }
}

/// A run as the writer builds it.
#[derive(Debug)]
pub struct Building {
    pub run: Run,
    pub count: usize,
    pub acked_to: i64,
    pub entries: Vec<u8>,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Groups a batch of produce events into runs: messages sorted by log
/// position, a new run whenever the node, epoch, topic or answer changes,
/// a position is not where the previous message ended, or a run is full.
pub fn build<'a>(events: impl IntoIterator<Item = &'a Stored>) -> Vec<Building> {
    let mut all: Vec<(&Stored, &StoredMsg)> = events
        .into_iter()
        .flat_map(|s| s.messages.iter().map(move |m| (s, m)))
        .collect();
    all.sort_by_key(|(_, m)| (m.node, m.epoch, m.pos));
    let mut out: Vec<Building> = Vec::new();
    for (s, m) in all {
        let status = s.status_of(m);
        let joins = out.last().is_some_and(|b| {
            b.count < MAX_RUN
                && b.run.node == m.node
                && b.run.epoch == m.epoch
                && b.run.pos_to == m.pos
                && b.run.topic == s.topic
                && b.run.send_mode == m.send_mode
                && b.run.send_status == status
                && b.run.flush_mode == s.flush_mode
                && b.run.replication == s.replication
                && m.stored_ms >= b.run.stored_from
        });
        if !joins {
            out.push(Building {
                run: Run {
                    node: m.node,
                    epoch: m.epoch,
                    pos_from: m.pos,
                    pos_to: m.pos,
                    topic: s.topic.clone(),
                    stored_from: m.stored_ms,
                    stored_to: m.stored_ms,
                    send_mode: m.send_mode.to_string(),
                    send_status: status.to_string(),
                    flush_mode: s.flush_mode.to_string(),
                    replication: s.replication.to_string(),
                },
                count: 0,
                acked_to: s.acked_ms,
                entries: Vec::new(),
            });
        }
        let Some(b) = out.last_mut() else { continue };
        let acked = s.acked_ms.max(m.stored_ms);
        put(&mut b.entries, m.end.saturating_sub(m.pos));
        put(&mut b.entries, u64::from(m.queue_id));
        put(&mut b.entries, m.queue_offset);
        put(&mut b.entries, (m.stored_ms - b.run.stored_from).max(0) as u64);
        put(&mut b.entries, zigzag(m.stored_ms - m.born_ms));
        put(&mut b.entries, (acked - m.stored_ms) as u64);
        put(&mut b.entries, u64::from(m.attempt));
        match &m.key {
            Some(k) => {
                put(&mut b.entries, k.len() as u64 + 1);
                b.entries.extend_from_slice(k.as_bytes());
            }
            None => put(&mut b.entries, 0),
        }
        b.count += 1;
        b.run.pos_to = m.end;
        b.run.stored_to = b.run.stored_to.max(m.stored_ms);
        b.acked_to = b.acked_to.max(acked);
    }
    out
}

/// Decodes a run's entry list; `None` when it is damaged.
pub fn decode(run: &Run, bytes: &[u8]) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut pos = run.pos_from;
    while at < bytes.len() {
        let len = get(bytes, &mut at)?;
        let queue_id = u32::try_from(get(bytes, &mut at)?).ok()?;
        let queue_offset = get(bytes, &mut at)?;
        let stored_ms = run.stored_from.checked_add(i64::try_from(get(bytes, &mut at)?).ok()?)?;
        let born_ms = stored_ms.checked_sub(unzigzag(get(bytes, &mut at)?))?;
        let acked_ms = stored_ms.checked_add(i64::try_from(get(bytes, &mut at)?).ok()?)?;
        let attempt = u32::try_from(get(bytes, &mut at)?).ok()?;
        let key = match get(bytes, &mut at)? {
            0 => None,
            n => {
                let n = usize::try_from(n - 1).ok()?;
                let k = bytes.get(at..at.checked_add(n)?)?;
                at += n;
                Some(String::from_utf8_lossy(k).into_owned())
            }
        };
        let end = pos.checked_add(len)?;
        out.push(Entry {
            pos,
            end,
            queue_id,
            queue_offset,
            born_ms,
            stored_ms,
            acked_ms,
            attempt,
            key,
        });
        pos = end;
    }
    Some(out)
}

/// Columns a run query selects.
pub const COLUMNS: &str = "node, epoch, pos_from, pos_to, topic, stored_from, stored_to, send_mode, send_status, \
                           flush_mode, replication, entries";

/// A run row and its entries (damaged entry lists decode as none).
pub fn from_row(r: &AnyRow) -> (Run, Vec<Entry>) {
    let run = Run {
        node: u16::try_from(int(r, "node")).unwrap_or(0),
        epoch: u32::try_from(int(r, "epoch")).unwrap_or(0),
        pos_from: int(r, "pos_from").max(0) as u64,
        pos_to: int(r, "pos_to").max(0) as u64,
        topic: text(r, "topic"),
        stored_from: int(r, "stored_from"),
        stored_to: int(r, "stored_to"),
        send_mode: text(r, "send_mode"),
        send_status: text(r, "send_status"),
        flush_mode: text(r, "flush_mode"),
        replication: text(r, "replication"),
    };
    let bytes: Vec<u8> = sqlx::Row::try_get::<Option<Vec<u8>>, _>(r, "entries")
        .ok()
        .flatten()
        .unwrap_or_default();
    let entries = decode(&run, &bytes).unwrap_or_default();
    (run, entries)
}

/// The run holding message `id`, and its entry; `None` when the trace has
/// no record of it (yet).
pub async fn find(pool: &AnyPool, id: &MessageId) -> Result<Option<(Run, Entry)>, TraceError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM trace_runs WHERE node = $1 AND epoch = $2 AND pos_from <= $3 \
         ORDER BY pos_from DESC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(i64::from(id.node))
        .bind(i64::from(id.epoch))
        .bind(id.pos as i64)
        .fetch_optional(pool)
        .await?;
    Ok(row.and_then(|r| {
        let (run, entries) = from_row(&r);
        let e = entries.into_iter().find(|e| e.pos == id.pos)?;
        Some((run, e))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(pos: u64, end: u64, key: Option<&str>, mode: &'static str) -> StoredMsg {
        StoredMsg {
            node: 1,
            epoch: 2,
            pos,
            end,
            queue_id: (pos % 4) as u32,
            queue_offset: pos / 10,
            born_ms: 1_000 + pos as i64,
            stored_ms: 1_005 + pos as i64,
            key: key.map(str::to_string),
            send_mode: mode,
            attempt: if pos == 100 { 2 } else { 1 },
            traceparent: None,
        }
    }

    fn request(acked_ms: i64, messages: Vec<StoredMsg>) -> Stored {
        Stored {
            topic: "t".into(),
            messages,
            acked_ms,
            flush_mode: "sync",
            send_status: "SEND_OK",
            replication: "none",
        }
    }

    #[test]
    fn adjacent_requests_share_a_run_and_decode_exactly() {
        // Two requests recorded out of log order, contiguous in the log.
        let b = request(
            2_000,
            vec![msg(100, 160, None, "sync"), msg(160, 230, Some("k1 k2"), "sync")],
        );
        let a = request(1_990, vec![msg(0, 100, Some("é"), "sync")]);
        let runs = build([&b, &a]);
        assert_eq!(runs.len(), 1);
        let r = &runs[0];
        assert_eq!((r.run.pos_from, r.run.pos_to, r.count), (0, 230, 3));
        let entries = decode(&r.run, &r.entries).expect("decodes");
        let want: Vec<(u64, u64, Option<&str>, i64)> = vec![
            (0, 100, Some("é"), 1_990),
            (100, 160, None, 2_000),
            (160, 230, Some("k1 k2"), 2_000),
        ];
        let got: Vec<(u64, u64, Option<&str>, i64)> = entries
            .iter()
            .map(|e| (e.pos, e.end, e.key.as_deref(), e.acked_ms))
            .collect();
        assert_eq!(got, want);
        assert_eq!(entries[1].born_ms, 1_100);
        assert_eq!(entries.iter().map(|e| e.attempt).collect::<Vec<_>>(), vec![1, 2, 1]);
        assert_eq!(entries[1].stored_ms, 1_105);
        assert_eq!((entries[2].queue_id, entries[2].queue_offset), (0, 16));
    }

    #[test]
    fn a_gap_a_mode_change_or_a_full_run_starts_a_new_run() {
        let gap = request(5, vec![msg(0, 10, None, "sync"), msg(20, 30, None, "sync")]);
        assert_eq!(build([&gap]).len(), 2);
        let modes = request(5, vec![msg(0, 10, None, "sync"), msg(10, 20, None, "oneway")]);
        let runs = build([&modes]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].run.send_status, "NONE");
        let many = request(
            5,
            (0..MAX_RUN as u64 + 1)
                .map(|i| msg(i * 10, i * 10 + 10, None, "sync"))
                .collect(),
        );
        let runs = build([&many]);
        assert_eq!(runs.iter().map(|r| r.count).collect::<Vec<_>>(), vec![MAX_RUN, 1]);
    }

    #[test]
    fn damaged_entries_decode_as_none() {
        let r = request(5, vec![msg(0, 10, Some("key"), "sync")]);
        let runs = build([&r]);
        let b = &runs[0];
        assert!(decode(&b.run, &b.entries[..b.entries.len() - 1]).is_none());
        assert!(decode(&b.run, &[0xff; 12]).is_none());
    }
}
