//! The store's read side: a record by position, by key, by queue offset,
//! and queue batches. Reads take the writer lock only to copy index entries
//! out, never across a file read of the log.

use std::sync::atomic::Ordering;

use super::key_index;
use super::queue_index::{QueueEntry, QueueIndex};
use super::record::{self, StoredMessage};
use super::store::{QueueBatch, Store};
use super::StorageError;

impl Store {
    /// Reads the message whose frame starts at `pos`, checking that `pos` is
    /// a real record boundary (its queue index points at it) and its CRC.
    pub fn read(&self, pos: u64) -> Result<StoredMessage, StorageError> {
        if pos >= self.shared.readable_end.load(Ordering::Acquire) {
            return Err(StorageError::NoRecord { pos });
        }
        // A bad header at a position nobody reported damaged means the
        // position is simply not a record start (a made-up id): not found.
        // A good header with a bad CRC, or anything inside a damaged region,
        // is corruption and is reported as such, never served.
        let in_damage = |pos: u64| self.shared.damage.iter().any(|d| d.from <= pos && pos < d.to);
        let frame = match self.shared.log.read_frame(pos) {
            Ok(f) => f,
            Err(StorageError::Corrupt { .. }) if !in_damage(pos) => return Err(StorageError::NoRecord { pos }),
            Err(e) => return Err(e),
        };
        let msg = record::decode(&frame).map_err(|error| StorageError::Corrupt {
            path: self
                .shared
                .log
                .segment_for(pos)
                .map(|s| s.path.clone())
                .unwrap_or_default(),
            pos,
            error,
        })?;
        match self.queue_entry(&msg.topic, msg.queue_id, msg.queue_offset)? {
            Some(e) if e.pos == pos => Ok(msg),
            _ => Err(StorageError::NoRecord { pos }),
        }
    }

    /// Messages whose key (any space-separated word) equals `key`, newest
    /// first, at most `limit`. Corrupt candidates are skipped and logged.
    pub fn find_by_key(&self, key: &str, limit: usize) -> Vec<(u64, StoredMessage)> {
        let candidates = self.shared.lock_writer().keys.candidates(key);
        let mut out = Vec::new();
        for pos in candidates.into_iter().rev() {
            if out.len() >= limit {
                break;
            }
            match self.read(pos) {
                Ok(m) if m.key.as_deref().is_some_and(|k| key_index::words(k).any(|w| w == key)) => out.push((pos, m)),
                Ok(_) => {}
                Err(e) => tracing::warn!(pos, error = %e, "key index candidate unreadable"),
            }
        }
        out
    }

    /// The consume-queue entry for a queue offset.
    pub fn queue_entry(&self, topic: &str, queue_id: u32, offset: u64) -> Result<Option<QueueEntry>, StorageError> {
        let w = self.shared.lock_writer();
        match w.queues.get(&(topic.to_string(), queue_id)) {
            Some(q) => q.get(offset),
            None => Ok(None),
        }
    }

    /// Up to `max` messages of a queue from queue offset `from`, in order,
    /// with their log positions. Stops at the first message not yet
    /// readable (sync flush: not yet fsynced). Holes (records lost to
    /// corruption) are skipped. Returns the messages and the offset after
    /// the last one examined.
    pub fn read_queue(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> Result<QueueBatch, StorageError> {
        let readable = self.shared.readable_end.load(Ordering::Acquire);
        let entries: Vec<(u64, QueueEntry)> = {
            let w = self.shared.lock_writer();
            let Some(q) = w.queues.get(&(topic.to_string(), queue_id)) else {
                return Ok((Vec::new(), from));
            };
            let end = q.next_offset().min(from.saturating_add(max as u64));
            let mut v = Vec::new();
            for off in from..end {
                match q.get(off)? {
                    Some(e) => v.push((off, e)),
                    None => break,
                }
            }
            v
        };
        let mut out = Vec::new();
        let mut next = from;
        for (off, e) in entries {
            if e.is_hole() {
                tracing::warn!(topic, queue_id, offset = off, "skipping a message lost to corruption");
                next = off + 1;
                continue;
            }
            if e.pos + u64::from(e.size) > readable {
                break;
            }
            match self.read(e.pos) {
                Ok(m) => out.push((off, e.pos, m)),
                Err(StorageError::Corrupt { .. }) => {
                    tracing::error!(topic, queue_id, offset = off, pos = e.pos, "corrupt record skipped");
                }
                Err(err) => return Err(err),
            }
            next = off + 1;
        }
        Ok((out, next))
    }

    /// Calls `f(offset, position, message)` on every readable record of a
    /// queue from its start, in order, batch by batch (holes and corrupt
    /// records skipped, as [`Store::read_queue`] does).
    pub fn scan_queue(
        &self,
        topic: &str,
        queue_id: u32,
        mut f: impl FnMut(u64, u64, StoredMessage),
    ) -> Result<(), StorageError> {
        /// Records per batch: bounds the memory of one step of the scan.
        const BATCH: usize = 1024;
        let mut from = 0;
        loop {
            let (batch, next) = self.read_queue(topic, queue_id, from, BATCH)?;
            for (offset, pos, m) in batch {
                f(offset, pos, m);
            }
            if next == from {
                return Ok(());
            }
            from = next;
        }
    }

    /// Next offset to be assigned in a queue (its length).
    /// Every consume queue with its length: `(topic, queue id, entries)`.
    pub fn queues(&self) -> Vec<(String, u32, u64)> {
        let w = self.shared.lock_writer();
        w.queues
            .iter()
            .map(|((t, q), idx)| (t.clone(), *q, idx.next_offset()))
            .collect()
    }

    /// Entries of a queue whose record ends at or below log position `pos`
    /// (e.g. how many are flushed): a binary search over the queue, which
    /// is in log order.
    pub fn queue_count_below(&self, topic: &str, queue_id: u32, pos: u64) -> u64 {
        let (mut lo, mut hi) = (0u64, self.queue_len(topic, queue_id));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.queue_entry(topic, queue_id, mid) {
                Ok(Some(e)) if e.pos + u64::from(e.size) <= pos => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    pub fn queue_len(&self, topic: &str, queue_id: u32) -> u64 {
        let w = self.shared.lock_writer();
        w.queues
            .get(&(topic.to_string(), queue_id))
            .map_or(0, QueueIndex::next_offset)
    }
}
