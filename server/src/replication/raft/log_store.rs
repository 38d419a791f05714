//! The Raft log on disk: CRC'd frames in one append-only file, through the
//! storage engine's file layer ([`crate::storage::fs`]).
//!
//! Frame: `magic u32 | len u32 | crc32c u32 | JSON entry`. On open every
//! frame is checked; the first bad or short one ends the log (a torn tail:
//! never acknowledged, since `append` reports an entry persisted only after
//! the fsync — with `--flush async` only after the write, and the fsync
//! follows at the flush interval; the closing note of the Raft issue spells
//! out what that means). `truncate` cuts the file at the first removed
//! entry. The vote is a separate small file written atomically. Entries are
//! never compacted: snapshots are off and the log is kept whole (the
//! state machine's commit log holds the same messages).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use tokio::sync::Mutex;

use super::TypeConfig;
use crate::storage::fs::{FileHandle, Fs};

const MAGIC: u32 = 0x5742_5246; // "FRBW"
const HEADER: usize = 12;
/// How often an append waiting on a full disk tries again.
const SPACE_RETRY: Duration = Duration::from_millis(100);

type NodeId = u64;

struct Inner {
    file: Arc<dyn FileHandle>,
    path: PathBuf,
    /// index → (file offset, frame length).
    index: BTreeMap<u64, (u64, u32)>,
    end: u64,
    last_log_id: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    vote_path: PathBuf,
    vote: Option<Vote<NodeId>>,
    /// Async flush: bytes written since the last fsync.
    dirty: bool,
}

/// Log storage and reader (cheap clones share one file).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// Sync flush: the group-commit thread that fsyncs and then reports
    /// appends persisted (one fsync for every append written before it).
    flusher: Option<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>>,
    /// Sync flush: how far the file is written and fsynced, so the state
    /// machine never applies (and the commit log never fsyncs) an entry
    /// this member's own Raft log could still lose to a power cut.
    durable: Option<Arc<Durable>>,
}

/// Written and fsynced ends of the Raft log file (sync flush).
#[derive(Default)]
pub struct Durable {
    written: std::sync::atomic::AtomicU64,
    synced: std::sync::atomic::AtomicU64,
    /// Set when an fsync failed: nothing more will become durable.
    failed: std::sync::atomic::AtomicBool,
    // Notify: waiters register before re-reading `synced`, so a sync that
    // lands in between is not missed.
    moved: tokio::sync::Notify,
}

/// Group commit for the Raft log: waits for one written append, takes all
/// others queued meanwhile, fsyncs once, completes them all. openraft keeps
/// appending while an fsync runs, so entries share fsyncs as producers add
/// concurrency — the same scheme as the commit log's flusher.
fn start_flusher(
    file: Arc<dyn FileHandle>,
    durable: Arc<Durable>,
) -> io::Result<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>> {
    use std::sync::atomic::Ordering;
    let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
    std::thread::Builder::new()
        .name("raft-log-flusher".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                // Every append queued here was written before it queued.
                let written = durable.written.load(Ordering::Acquire);
                let result = file.sync();
                match &result {
                    Ok(()) => {
                        durable.synced.fetch_max(written, Ordering::AcqRel);
                    }
                    Err(_) => durable.failed.store(true, Ordering::Release),
                }
                durable.moved.notify_waiters();
                for cb in batch {
                    cb.log_io_completed(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
        })?;
    Ok(tx)
}

fn io_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(&io::Error::other(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_logs(&io::Error::other(e.to_string())).into()
}

impl LogStore {
    /// Sync flush: waits until entry `index` is fsynced in this member's
    /// own Raft log (at once when it is, or under async flush). A leader
    /// may learn an entry is committed (its followers fsynced it) before
    /// its own fsync returns; applying it then would let the commit log
    /// hold, after a power cut, an entry the Raft log lost, and the member
    /// could not restart.
    pub async fn wait_durable(&self, index: u64) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let Some(d) = &self.durable else { return Ok(()) };
        // Usual case on a follower, and on a leader whose fsync came first:
        // everything written is synced, no lock needed.
        if d.synced.load(Ordering::Acquire) >= d.written.load(Ordering::Acquire) {
            return Ok(());
        }
        let end = {
            let g = self.inner.lock().await;
            match g.index.get(&index) {
                Some((off, len)) => off + u64::from(*len),
                None => return Ok(()),
            }
        };
        loop {
            let moved = d.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if d.synced.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            if d.failed.load(Ordering::Acquire) {
                return Err(io::Error::other("raft log fsync failed"));
            }
            // Bounded: a flusher that died must not hang apply forever.
            let _ = tokio::time::timeout(Duration::from_secs(1), moved).await;
        }
    }

    /// Opens (recovering) the Raft log in `dir`. `sync`: fsync before an
    /// append counts as persisted; otherwise a background task fsyncs
    /// every `interval`.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, sync: bool, interval: Duration) -> io::Result<LogStore> {
        fs.create_dir_all(dir)?;
        // The vote and purge marks are written with std::fs next to the
        // log (which goes through `fs`, maybe not the real disk).
        std::fs::create_dir_all(dir)?;
        let path = dir.join("raft.log");
        let file = fs.open(&path, true)?;
        // A new log's name is durable only once its directory is synced:
        // without this a power cut could take the whole file.
        fs.sync_dir(dir)?;
        let len = file.len()?;
        let mut index = BTreeMap::new();
        let mut at = 0u64;
        let mut last_log_id = None;
        while at + HEADER as u64 <= len {
            let mut head = [0u8; HEADER];
            if file.read_at(&mut head, at)? < HEADER {
                break;
            }
            let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
            let n = word(4) as usize;
            if word(0) != MAGIC || at + (HEADER + n) as u64 > len {
                break;
            }
            let mut body = vec![0u8; n];
            if file.read_at(&mut body, at + HEADER as u64)? < n || crc32c::crc32c(&body) != word(8) {
                break;
            }
            let Ok(e) = serde_json::from_slice::<Entry<TypeConfig>>(&body) else {
                break;
            };
            index.insert(e.log_id.index, (at, (HEADER + n) as u32));
            last_log_id = Some(e.log_id);
            at += (HEADER + n) as u64;
        }
        if at < len {
            if let Some(next) = whole_frame_after(file.as_ref(), at, len)? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "raft log {} is damaged at byte {at}, and a whole entry follows at byte {next}: this is \
                         damage inside the log, not a torn tail, and cutting it would drop entries this member \
                         acknowledged to its leader. Rebuild this member: move its data dir away and let it \
                         rejoin the group",
                        path.display()
                    ),
                ));
            }
            tracing::warn!(path = %path.display(), valid = at, len, "raft log: torn tail cut");
            file.set_len(at)?;
            file.sync()?;
        }
        let vote_path = dir.join("raft.vote");
        let vote = match std::fs::read(&vote_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let purged_path = dir.join("raft.purged");
        let last_purged = match std::fs::read(&purged_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other)?,
            Err(_) => None,
        };
        let durable = sync.then(|| {
            let d = Durable::default();
            // What recovery kept was synced before (or is cut just above).
            d.written.store(at, std::sync::atomic::Ordering::Relaxed);
            d.synced.store(at, std::sync::atomic::Ordering::Relaxed);
            Arc::new(d)
        });
        let flusher = match &durable {
            Some(d) => Some(start_flusher(file.clone(), d.clone())?),
            None => None,
        };
        let store = LogStore {
            inner: Arc::new(Mutex::new(Inner {
                file,
                path,
                index,
                end: at,
                last_log_id,
                last_purged,
                vote_path,
                vote,
                dirty: false,
            })),
            flusher,
            durable,
        };
        if !sync {
            let weak = Arc::downgrade(&store.inner);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    let Some(inner) = weak.upgrade() else { return };
                    let mut g = inner.lock().await;
                    if g.dirty {
                        if let Err(e) = g.file.sync() {
                            tracing::error!(error = %e, "raft log fsync failed");
                        }
                        g.dirty = false;
                    }
                }
            });
        }
        Ok(store)
    }

    /// Entries in the log (for the cluster view).
    pub async fn last_index(&self) -> Option<u64> {
        self.inner.lock().await.last_log_id.map(|l| l.index)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let g = self.inner.lock().await;
        let mut out = Vec::new();
        for (_, (off, len)) in g.index.range(range) {
            let mut buf = vec![0u8; *len as usize];
            let n = g.file.read_at(&mut buf, *off).map_err(read_err)?;
            if n < buf.len() {
                return Err(read_err(format!("short read of raft entry at {off}")));
            }
            let e: Entry<TypeConfig> = serde_json::from_slice(&buf[HEADER..]).map_err(read_err)?;
            out.push(e);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let g = self.inner.lock().await;
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: g.last_log_id.or(g.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.inner.lock().await;
        let bytes = serde_json::to_vec(vote).map_err(io_err)?;
        write_atomic(&g.vote_path, &bytes).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut g = self.inner.lock().await;
        let mut buf = Vec::new();
        let mut placed = Vec::new();
        let mut last = None;
        for e in entries {
            let f = frame(&e).map_err(io_err)?;
            let off = g.end + buf.len() as u64;
            placed.push((e.log_id.index, (off, f.len() as u32)));
            buf.extend_from_slice(&f);
            last = Some(e.log_id);
        }
        let start = g.end;
        // A full disk: wait until space returns rather than fail (openraft
        // shuts this member down for good on a storage error). The write is
        // positional, so writing the same bytes at the same offset again is
        // harmless; the lock held meanwhile keeps every other append waiting.
        let mut warned = false;
        loop {
            match g.file.write_at(&buf, start) {
                Ok(()) => break,
                Err(e) if crate::storage::fs::is_enospc(&e) => {
                    if !warned {
                        tracing::warn!("raft log: the disk is full; appends wait until space returns");
                        warned = true;
                    }
                    tokio::time::sleep(SPACE_RETRY).await;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        g.end += buf.len() as u64;
        if let Some(d) = &self.durable {
            d.written.store(g.end, std::sync::atomic::Ordering::Release);
        }
        g.index.extend(placed);
        if last.is_some() {
            g.last_log_id = last;
        }
        match &self.flusher {
            Some(f) => {
                if let Err(std::sync::mpsc::SendError(cb)) = f.send(callback) {
                    cb.log_io_completed(Err(io::Error::other("raft log flusher stopped")));
                }
            }
            None => {
                g.dirty = true;
                callback.log_io_completed(Ok(()));
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.inner.lock().await;
        let Some((&first, &(off, _))) = g.index.range(log_id.index..).next() else {
            return Ok(());
        };
        g.file.set_len(off).map_err(io_err)?;
        g.file.sync().map_err(io_err)?;
        g.end = off;
        let _ = g.index.split_off(&first);
        g.last_log_id = match g.index.iter().next_back() {
            Some((_, &(o, l))) => {
                let mut buf = vec![0u8; l as usize];
                g.file.read_at(&mut buf, o).map_err(read_err)?;
                let e: Entry<TypeConfig> = serde_json::from_slice(&buf[HEADER..]).map_err(read_err)?;
                Some(e.log_id)
            }
            None => g.last_purged,
        };
        tracing::warn!(from = log_id.index, path = %g.path.display(), "raft log truncated (conflicting entries)");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Entries up to `log_id` are no longer served; the bytes stay in
        // the file (no compaction: snapshots are off, so this is not
        // expected to be called).
        let mut g = self.inner.lock().await;
        let keep = g.index.split_off(&(log_id.index + 1));
        g.index = keep;
        g.last_purged = Some(log_id);
        let bytes = serde_json::to_vec(&g.last_purged).map_err(io_err)?;
        let path = g.vote_path.with_file_name("raft.purged");
        write_atomic(&path, &bytes).map_err(io_err)?;
        Ok(())
    }
}

/// One entry as a log frame: `magic | len | crc32c | JSON`.
/// How far past a bad frame recovery looks for a whole one: more than the
/// largest entry, so the frame after a damaged one is always in reach.
const RESYNC_WINDOW: u64 = 32 << 20;

/// The offset of the first whole, CRC-checked, parseable entry frame that
/// starts after `bad` (within [`RESYNC_WINDOW`]), if any. A torn tail has
/// none after it: appends are sequential, so what follows a torn write was
/// never synced either. Entries are JSON, whose text cannot hold a frame
/// header's binary length, so a message body cannot fake one.
fn whole_frame_after(file: &dyn FileHandle, bad: u64, len: u64) -> io::Result<Option<u64>> {
    let from = bad + 1;
    let size = (len - from.min(len)).min(RESYNC_WINDOW) as usize;
    let mut rest = vec![0u8; size];
    let n = file.read_at(&mut rest, from)?;
    rest.truncate(n);
    let magic = MAGIC.to_le_bytes();
    for i in 0..rest.len().saturating_sub(HEADER) {
        if rest[i..i + 4] != magic {
            continue;
        }
        let word = |j: usize| u32::from_le_bytes([rest[j], rest[j + 1], rest[j + 2], rest[j + 3]]);
        let body_len = word(i + 4) as usize;
        let Some(body) = rest.get(i + HEADER..i + HEADER + body_len) else {
            continue;
        };
        if crc32c::crc32c(body) == word(i + 8) && serde_json::from_slice::<Entry<TypeConfig>>(body).is_ok() {
            return Ok(Some(from + i as u64));
        }
    }
    Ok(None)
}

pub(crate) fn frame(e: &Entry<TypeConfig>) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec(e)?;
    let mut f = Vec::with_capacity(HEADER + body.len());
    f.extend_from_slice(&MAGIC.to_le_bytes());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    f.extend_from_slice(&body);
    Ok(f)
}

/// Writes `bytes` to `path` via a temp file, fsynced, renamed, dir fsynced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faultfs::FaultFs;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    /// A log of three entries on a fresh fault FS; returns the FS and the
    /// frames' start offsets.
    fn three_entries(dir: &Path) -> (FaultFs, Vec<u64>) {
        let fs = FaultFs::new();
        let f = fs.open(&dir.join("raft.log"), true).expect("open");
        let mut at = 0u64;
        let mut starts = Vec::new();
        for i in 1..=3 {
            let bytes = frame(&entry(i)).expect("frame");
            f.write_at(&bytes, at).expect("write");
            starts.push(at);
            at += bytes.len() as u64;
        }
        f.sync().expect("sync");
        fs.sync_dir(dir).expect("sync dir");
        (fs, starts)
    }

    #[tokio::test]
    async fn a_torn_last_entry_is_cut_but_damage_before_a_whole_entry_refuses_to_open() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        // Torn: the last frame loses its end.
        let (fs, starts) = three_entries(dir);
        let f = fs.open(&dir.join("raft.log"), false).expect("open");
        let len = f.len().expect("len");
        f.set_len(len - 3).expect("cut");
        let log = LogStore::open(Arc::new(fs.clone()), dir, true, Duration::from_millis(10)).expect("opens");
        assert_eq!(log.inner.lock().await.index.len(), 2);
        assert_eq!(f.len().expect("len"), starts[2]);
        drop(log);

        // Damaged: a byte inside the second entry, the third one whole.
        let (fs, starts) = three_entries(dir);
        fs.corrupt_byte(&dir.join("raft.log"), starts[1] + HEADER as u64 + 2)
            .expect("flip");
        let err = LogStore::open(Arc::new(fs.clone()), dir, true, Duration::from_millis(10))
            .err()
            .expect("refuses");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string()
                .contains(&format!("whole entry follows at byte {}", starts[2])),
            "{err}"
        );
        // Nothing was cut.
        let f = fs.open(&dir.join("raft.log"), false).expect("open");
        assert!(f.len().expect("len") > starts[2]);
    }
}
