//! Seeking a queue by time: the first queue offset whose message was
//! stored at or after a given time.
//!
//! The time compared is the record's *stored* time (`stored_ms`, the
//! broker's clock when the record was appended, or the primary's for a
//! copied record), as Kafka's `offsetsForTimes` uses the log append time:
//! a producer's birth time is its own clock and need not grow with the
//! queue. Stored times are taken under the store's one writer lock, so
//! they follow queue order unless the wall clock stepped back; the binary
//! search assumes that order (after a step back the answer is the first
//! offset of *a* run at or after the time, like Kafka's).
//!
//! Bounded: one probe reads one record (skipping at most [`MAX_SKIP`]
//! holes or corrupt records forward), and a search makes `log2(len)`
//! probes.

use super::store::Store;
use super::StorageError;

/// Most index entries one probe walks past (holes, corrupt records)
/// before it gives the range up as holding nothing readable.
const MAX_SKIP: u64 = 64;

impl Store {
    /// The first queue offset at or after which every readable message
    /// was stored at or after `at_ms`: the offset a consumer starts from
    /// to see exactly the messages stored since `at_ms`. The queue's end
    /// when there are none.
    pub fn offset_at_time(&self, topic: &str, queue_id: u32, at_ms: i64) -> Result<u64, StorageError> {
        // Invariant: readable messages below `lo` were stored before
        // `at_ms`; none at or past `hi` need be looked at.
        let (mut lo, mut hi) = (0u64, self.queue_len(topic, queue_id));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.stored_ms_from(topic, queue_id, mid, hi)? {
                Some((off, stored)) if stored < at_ms => lo = off + 1,
                // At or after the time, or nothing readable in `mid..hi`
                // (holes are skipped by readers, so starting at `mid` is
                // the same as starting at the readable one).
                Some(_) | None => hi = mid,
            }
        }
        Ok(lo)
    }

    /// The first readable message in `from..to` (at most [`MAX_SKIP`]
    /// entries looked at): its offset and stored time.
    fn stored_ms_from(
        &self,
        topic: &str,
        queue_id: u32,
        from: u64,
        to: u64,
    ) -> Result<Option<(u64, i64)>, StorageError> {
        for off in from..to.min(from.saturating_add(MAX_SKIP)) {
            let Some(entry) = self.queue_entry(topic, queue_id, off)? else {
                return Ok(None);
            };
            if entry.is_hole() {
                continue;
            }
            match self.read(entry.pos) {
                Ok(m) => return Ok(Some((off, m.stored_ms))),
                // Not yet readable (sync flush: not yet fsynced): it and
                // everything after it count as the end.
                Err(StorageError::NoRecord { .. }) => return Ok(None),
                Err(StorageError::Corrupt { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::storage::{fs::RealFs, Flush, NewMessage, Store, StoreOptions};

    fn message(queue_id: u32) -> NewMessage {
        NewMessage {
            topic: "t".into(),
            queue_id,
            key: None,
            tags: None,
            producer: None,
            properties: Default::default(),
            body: b"x".to_vec(),
            born_ms: 0,
        }
    }

    #[test]
    fn seeks_the_first_message_stored_at_or_after_a_time() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let opts = StoreOptions::new(
            tmp.path(),
            Flush::Async {
                interval: std::time::Duration::from_millis(5),
            },
        );
        let store = Store::open(Arc::new(RealFs), opts)?;
        let mut times = Vec::new();
        for _ in 0..5 {
            for _ in 0..3 {
                store.append(message(0))?;
            }
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        // Everything appended is readable in async mode once written.
        for off in 0..15 {
            let e = store
                .queue_entry("t", 0, off)?
                .ok_or_else(|| anyhow::anyhow!("no entry {off}"))?;
            times.push(store.read(e.pos)?.stored_ms);
        }
        for (i, &t) in times.iter().enumerate() {
            let first = times.iter().position(|&x| x >= t).unwrap_or(times.len()) as u64;
            assert_eq!(store.offset_at_time("t", 0, t)?, first, "time of offset {i}");
        }
        assert_eq!(store.offset_at_time("t", 0, i64::MIN)?, 0);
        assert_eq!(
            store.offset_at_time("t", 0, times[14] + 1)?,
            15,
            "past the last: the end"
        );
        assert_eq!(store.offset_at_time("t", 1, 0)?, 0, "an empty queue: its end");
        store.close();
        Ok(())
    }
}
