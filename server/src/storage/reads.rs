//! The store's read side: a record by position, by key, by queue offset,
//! and queue batches. Reads take the writer lock only to copy index state
//! out (a queue file handle, its persisted count, in-memory entries), never
//! across a file read of the log or of an index: `/metrics` and every pull
//! read here, and appends wait on that lock. Entries below a queue's
//! persisted count are never rewritten while the store is open, so reading
//! them after the lock is released sees what was there (see
//! `queue_index.rs`).

use std::sync::atomic::Ordering;

use super::key_index;
use super::queue_index::{CountBelow, QueueEntry, QueueIndex, QueueRange};
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
        let range = self.queue_range(topic, queue_id, offset, offset.saturating_add(1));
        Ok(range.read()?.into_iter().next())
    }

    /// Entries `from..to` of a queue as taken under the writer lock, to be
    /// read after it is released.
    fn queue_range(&self, topic: &str, queue_id: u32, from: u64, to: u64) -> QueueRange {
        let w = self.shared.lock_writer();
        w.queues
            .get(&(topic.to_string(), queue_id))
            .map(|q| q.range(from, to))
            .unwrap_or_default()
    }

    /// Up to `max` messages of a queue from queue offset `from`, in order,
    /// with their log positions. Stops at the first message not yet
    /// readable (sync flush: not yet fsynced). Holes (records lost to
    /// corruption) are skipped. Returns the messages and the offset after
    /// the last one examined.
    pub fn read_queue(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> Result<QueueBatch, StorageError> {
        let readable = self.shared.readable_end.load(Ordering::Acquire);
        let entries = self
            .queue_range(topic, queue_id, from, from.saturating_add(max as u64))
            .read()?;
        let mut out = Vec::new();
        let mut next = from;
        for (off, e) in (from..).zip(entries) {
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
    ///
    /// The in-memory entries are searched under the writer lock; when the
    /// boundary lies in the persisted prefix, that is searched after the
    /// lock is released.
    pub fn queue_count_below(&self, topic: &str, queue_id: u32, pos: u64) -> u64 {
        let decided = {
            let w = self.shared.lock_writer();
            match w.queues.get(&(topic.to_string(), queue_id)) {
                Some(q) => q.count_below(pos),
                None => CountBelow::Known(0),
            }
        };
        match decided {
            CountBelow::Known(n) => n,
            CountBelow::Search(persisted) => persisted.count_below(pos),
        }
    }

    /// Bytes of a queue's records from offset `from` to its end (holes
    /// count nothing), read from the index in bounded batches.
    pub fn queue_bytes(&self, topic: &str, queue_id: u32, from: u64) -> Result<u64, StorageError> {
        /// Entries per batch: bounds the memory of one step.
        const BATCH: u64 = 4096;
        let end = self.queue_len(topic, queue_id);
        let (mut at, mut bytes) = (from, 0u64);
        while at < end {
            let to = at.saturating_add(BATCH).min(end);
            let entries = self.queue_range(topic, queue_id, at, to).read()?;
            if entries.is_empty() {
                break;
            }
            bytes += entries
                .iter()
                .filter(|e| !e.is_hole())
                .map(|e| u64::from(e.size))
                .sum::<u64>();
            at = to;
        }
        Ok(bytes)
    }

    pub fn queue_len(&self, topic: &str, queue_id: u32) -> u64 {
        let w = self.shared.lock_writer();
        w.queues
            .get(&(topic.to_string(), queue_id))
            .map_or(0, QueueIndex::next_offset)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, OnceLock, TryLockError, Weak};
    use std::time::Duration;

    use crate::storage::faultfs::FaultFs;
    use crate::storage::fs::{FileHandle, Fs};
    use crate::storage::store::Shared;
    use crate::storage::{Appended, Flush, NewMessage, Store, StoreOptions};

    const TOPIC: &str = "t";

    fn message(i: u64) -> NewMessage {
        NewMessage {
            topic: TOPIC.into(),
            queue_id: 0,
            key: Some(format!("k{i}")),
            body: format!("m{i}-{}", "x".repeat((i % 50) as usize)).into_bytes(),
            ..Default::default()
        }
    }

    /// Entries ending at or below `pos` among the appended messages.
    fn oracle_below(appended: &[Appended], pos: u64) -> u64 {
        appended.iter().take_while(|a| a.end <= pos).count() as u64
    }

    /// Readers race one appender while the indexer moves entries from
    /// memory to the file every millisecond: every entry, batch and count
    /// read must be the one the appender got for that offset.
    #[test]
    fn queue_reads_racing_appends_see_what_was_appended() -> anyhow::Result<()> {
        const N: u64 = 2_000;
        let fs = FaultFs::new();
        let mut opts = StoreOptions::new(
            "/data",
            Flush::Async {
                interval: Duration::from_millis(1),
            },
        );
        opts.index_interval = Duration::from_millis(1);
        opts.segment_bytes = 16 * 1024;
        let store = Arc::new(Store::open(Arc::new(fs), opts)?);
        let done = Arc::new(AtomicBool::new(false));
        // Reader rounds finished: the appender waits for some between
        // chunks, so reads interleave with appends however threads run.
        let rounds = Arc::new(AtomicU64::new(0));
        // (offset, entry pos, entry size) from queue_entry; (offset, pos,
        // body) from read_queue; (pos, count, len before, len after).
        type Seen = (
            Vec<(u64, u64, u32)>,
            Vec<(u64, u64, Vec<u8>)>,
            Vec<(u64, u64, u64, u64)>,
        );
        let mut readers = Vec::new();
        for r in 0..2u64 {
            let (store, done, rounds) = (store.clone(), done.clone(), rounds.clone());
            readers.push(std::thread::spawn(move || -> anyhow::Result<Seen> {
                let mut seen: Seen = Default::default();
                let mut x = r + 1;
                while !done.load(Ordering::Acquire) {
                    let len = store.queue_len(TOPIC, 0);
                    if len == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    for off in [len - 1, len / 2, (x >> 33) % len] {
                        let e = store
                            .queue_entry(TOPIC, 0, off)?
                            .ok_or_else(|| anyhow::anyhow!("no entry at {off} below length {len}"))?;
                        seen.0.push((off, e.pos, e.size));
                    }
                    let (batch, _) = store.read_queue(TOPIC, 0, (x >> 40) % len, 64)?;
                    seen.1.extend(batch.into_iter().map(|(o, p, m)| (o, p, m.body)));
                    let pos = store.stats().log_end / 2 + (x >> 50);
                    let count = store.queue_count_below(TOPIC, 0, pos);
                    seen.2.push((pos, count, len, store.queue_len(TOPIC, 0)));
                    rounds.fetch_add(1, Ordering::Release);
                }
                Ok(seen)
            }));
        }
        let mut appended = Vec::new();
        for i in 0..N {
            appended.push(store.append(message(i))?);
            if i % 50 == 49 {
                let seen = rounds.load(Ordering::Acquire);
                while rounds.load(Ordering::Acquire) < seen + 4 {
                    std::thread::yield_now();
                }
            }
        }
        done.store(true, Ordering::Release);
        for reader in readers {
            let (entries, batches, counts) = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
            for (off, pos, size) in entries {
                let a = appended[off as usize];
                assert_eq!((pos, u64::from(size)), (a.pos, a.end - a.pos), "entry at offset {off}");
            }
            for (off, pos, body) in batches {
                assert_eq!(pos, appended[off as usize].pos, "batch position at offset {off}");
                assert_eq!(body, message(off).body, "batch body at offset {off}");
            }
            for (pos, count, before, after) in counts {
                let all = oracle_below(&appended, pos);
                assert!(
                    all.min(before) <= count && count <= all.min(after),
                    "count below {pos}: {count}, expected {all} cut to {before}..={after}"
                );
            }
        }
        // After close every entry is in the file: read them all from there.
        store.close();
        let (batch, next) = store.read_queue(TOPIC, 0, 0, N as usize)?;
        assert_eq!(next, N);
        let positions: Vec<u64> = batch.iter().map(|(_, p, _)| *p).collect();
        assert_eq!(positions, appended.iter().map(|a| a.pos).collect::<Vec<_>>());
        for a in [&appended[0], &appended[N as usize / 3], &appended[N as usize - 1]] {
            assert_eq!(store.queue_count_below(TOPIC, 0, a.end), a.queue_offset + 1);
            assert_eq!(store.queue_count_below(TOPIC, 0, a.end - 1), a.queue_offset);
        }
        Ok(())
    }

    /// Wraps [`FaultFs`]; its consume-queue files note every read made
    /// while the store's writer lock is held. Only the reading thread runs
    /// store code during the check (no appends, flusher and indexer parked
    /// for an hour), so a held lock is the reader's own.
    struct Probe {
        fs: FaultFs,
        shared: Arc<OnceLock<Weak<Shared>>>,
        reads: Arc<AtomicU64>,
        under_lock: Arc<AtomicU64>,
    }

    struct ProbeFile {
        inner: Arc<dyn FileHandle>,
        shared: Arc<OnceLock<Weak<Shared>>>,
        reads: Arc<AtomicU64>,
        under_lock: Arc<AtomicU64>,
    }

    impl FileHandle for ProbeFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            if let Some(shared) = self.shared.get().and_then(Weak::upgrade) {
                self.reads.fetch_add(1, Ordering::Relaxed);
                if let Err(TryLockError::WouldBlock) = shared.writer.try_lock() {
                    self.under_lock.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.inner.write_at(buf, offset)
        }
        fn sync(&self) -> io::Result<()> {
            self.inner.sync()
        }
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
    }

    impl Fs for Probe {
        fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileHandle>> {
            let inner = self.fs.open(path, create)?;
            if path.extension().is_some_and(|e| e == "cq") {
                return Ok(Arc::new(ProbeFile {
                    inner,
                    shared: self.shared.clone(),
                    reads: self.reads.clone(),
                    under_lock: self.under_lock.clone(),
                }));
            }
            Ok(inner)
        }
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.fs.create_dir_all(path)
        }
        fn list(&self, path: &Path) -> io::Result<Vec<String>> {
            self.fs.list(path)
        }
        fn exists(&self, path: &Path) -> bool {
            self.fs.exists(path)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.fs.remove_file(path)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            self.fs.sync_dir(path)
        }
        fn available(&self, path: &Path) -> io::Result<u64> {
            self.fs.available(path)
        }
    }

    #[test]
    fn queue_index_files_are_read_outside_the_writer_lock() -> anyhow::Result<()> {
        const N: u64 = 100;
        let fs = FaultFs::new();
        let appended = {
            let store = Store::open(Arc::new(fs.clone()), StoreOptions::new("/data", Flush::Sync))?;
            let appended = (0..N)
                .map(|i| store.append(message(i)))
                .collect::<Result<Vec<_>, _>>()?;
            store.close();
            appended
        };
        let hour = Duration::from_secs(3600);
        let mut opts = StoreOptions::new("/data", Flush::Sync);
        opts.index_interval = hour;
        let probe = Probe {
            fs,
            shared: Arc::new(OnceLock::new()),
            reads: Arc::new(AtomicU64::new(0)),
            under_lock: Arc::new(AtomicU64::new(0)),
        };
        let (shared, reads, under_lock) = (probe.shared.clone(), probe.reads.clone(), probe.under_lock.clone());
        let store = Store::open(Arc::new(probe), opts)?;
        let _ = shared.set(Arc::downgrade(&store.shared));
        // Reopened: every entry is in the file, none in memory.
        let e = store.queue_entry(TOPIC, 0, 7)?;
        assert_eq!(e.map(|e| e.pos), Some(appended[7].pos));
        let (batch, next) = store.read_queue(TOPIC, 0, 10, 20)?;
        assert_eq!((batch.len(), next), (20, 30));
        assert_eq!(store.read(appended[42].pos)?.body, message(42).body);
        assert_eq!(store.queue_count_below(TOPIC, 0, appended[60].end), 61);
        assert_eq!(store.find_by_key("k5", 1).len(), 1);
        assert!(reads.load(Ordering::Relaxed) > 0, "the checks read no index file");
        assert_eq!(
            under_lock.load(Ordering::Relaxed),
            0,
            "index files read under the writer lock"
        );
        Ok(())
    }
}
