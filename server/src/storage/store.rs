//! The store: append, wait for durability, read back, look up by key.
//!
//! One writer lock orders appends: it covers assigning the queue offset,
//! encoding, the positional write into the active segment and the in-memory
//! index entries, so log order, queue order and index order always agree.
//! Nothing slow happens under it: fsyncs run outside it (group commit: one
//! fsync covers every frame written before it started; see `flusher.rs` for
//! who runs them) and index files are written by the indexer thread.
//!
//! Durability is published through the `flushed` watermark: its position
//! only ever moves to an `end` the flusher saw before an fsync that
//! succeeded. After a failed fsync the store is *failed*: the watermark says so, waiting
//! appends get [`FlushOutcome::Failed`], and new appends are refused — the
//! kernel may have dropped the dirty pages, so retrying the fsync and
//! reporting success would be a lie.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use super::checkpoint::CheckpointFile;
use super::clean;
use super::fs::Fs;
use super::key_index::{self, KeyIndex};
use super::log::{CommitLog, LogTail};
use super::queue_index::{QueueEntry, QueueIndex};
use super::record::{self, StoredMessage};
use super::recovery::{self, Damage, WriterRun};
use super::space::{DiskReport, Space};
use super::watermark::{Registration, Watermark};
use super::{flusher, Flush, StorageError, StoreOptions};
use crate::time::now_ms;

/// A message to append; the store adds ids, times and the queue offset.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub topic: String,
    pub queue_id: u32,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub producer: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub born_ms: i64,
}

/// Who a message is appended as (see [`Store::append_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAs {
    pub node: u16,
    pub epoch: u32,
    pub stored_ms: i64,
}

/// Where an appended message landed (also a Raft entry's apply result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Appended {
    pub pos: u64,
    /// One past the frame's last byte: durable once `flushed >= end`.
    pub end: u64,
    pub queue_offset: u64,
    pub node: u16,
    pub epoch: u32,
    pub stored_ms: i64,
}

/// Messages read from a queue as `(queue offset, log position, message)`,
/// and the offset to read from next.
pub type QueueBatch = (Vec<(u64, u64, StoredMessage)>, u64);

/// Result of waiting for an fsync to cover an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushOutcome {
    Flushed,
    TimedOut,
    Failed(String),
}

/// Latency buckets (upper bounds, microseconds) of the fsync histogram.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Monotonic counters; atomics so the hot path never takes a lock for them.
#[derive(Default)]
pub(crate) struct Counters {
    pub appended_msgs: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_nanos: AtomicU64,
    pub synced_msgs: AtomicU64,
    pub fsync_hist: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
}

/// A point-in-time copy of the counters and watermarks.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub appended_msgs: u64,
    pub appended_bytes: u64,
    /// Log fsyncs (one per group commit).
    pub fsyncs: u64,
    pub fsync_nanos: u64,
    /// Messages covered by those fsyncs.
    pub synced_msgs: u64,
    /// Cumulative counts per `FSYNC_BUCKETS_US` bucket, plus +Inf last.
    pub fsync_hist: Vec<u64>,
    pub log_end: u64,
    pub flushed: u64,
    pub indexed_upto: u64,
    pub segments: usize,
    pub epoch: u32,
    /// Sync-flush appends waiting for their fsync.
    pub flush_waiters: usize,
}

/// State behind the writer lock.
pub(crate) struct Writer {
    pub tail: LogTail,
    pub queues: HashMap<(String, u32), QueueIndex>,
    pub keys: KeyIndex,
    /// Directories that gained entries since the indexer last synced them.
    pub new_dirs: Vec<PathBuf>,
    /// Messages appended since open (the flusher's per-fsync count).
    pub appended: u64,
    pub failed: Option<Arc<str>>,
    /// Which writer (node, boot epoch) wrote which part of the log.
    pub runs: Vec<WriterRun>,
    /// Position of the last record appended.
    pub last: Option<u64>,
}

/// Everything the background threads share with the store.
pub(crate) struct Shared {
    pub fs: Arc<dyn Fs>,
    /// `index/queues`, computed once: appends create queue files under it.
    pub queues_dir: PathBuf,
    pub opts: StoreOptions,
    pub log: CommitLog,
    // std Mutex: held only for in-memory work and one positional write,
    // never across an await.
    pub writer: Mutex<Writer>,
    /// Log end as last published by the writer (appended, maybe only in the
    /// tail buffer); lets the flusher check for work without the lock.
    pub appended_end: AtomicU64,
    /// Every byte below this is in a segment file: readers stop here.
    pub readable_end: AtomicU64,
    /// Notified whenever `readable_end` moves (replication streams wait on it).
    pub readable_moved: tokio::sync::Notify,
    pub flushed: Watermark,
    // Only the indexer writes checkpoints after open; Mutex for Sync.
    pub checkpoint: Mutex<CheckpointFile>,
    pub indexed_upto: AtomicU64,
    pub epoch: u32,
    pub damage: Vec<Damage>,
    /// Whether open scanned the log or trusted a clean-shutdown marker.
    pub opened: clean::Opened,
    /// Records in the log at open (the marker's count adds this boot's).
    pub opened_records: u64,
    /// Refuses appends on a full disk (see `space.rs`).
    pub space: Space,
    pub counters: Counters,
    pub shutdown: AtomicBool,
    /// Held for one group commit, by the flusher thread or an inline flush
    /// (`flusher.rs`): one at a time, so chunks reach the files in order.
    pub flush_lock: Mutex<()>,
    /// Set once the threads start; `unpark` wakes them.
    pub flusher: OnceLock<Thread>,
    pub indexer: OnceLock<Thread>,
}

impl Shared {
    pub fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The durable message store.
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    // Joined on close; a Mutex so `close(&self)` can take them once.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Opens (recovering if needed) the store in `opts.dir` and starts its
    /// flusher and indexer threads.
    pub fn open(fs: Arc<dyn Fs>, opts: StoreOptions) -> Result<Store, StorageError> {
        let dir = opts.dir.clone();
        let log_dir = dir.join("log");
        let index_dir = dir.join("index");
        let queues_dir = index_dir.join("queues");
        for d in [&dir, &log_dir, &queues_dir] {
            fs.create_dir_all(d).map_err(io_err(d))?;
        }
        let cp_path = dir.join("checkpoint");
        let cp_file = fs.open(&cp_path, true).map_err(io_err(&cp_path))?;
        let mut checkpoint = CheckpointFile::open(cp_path, cp_file)?;
        let cp = checkpoint.current();

        let proof = recovery::IndexProof {
            fs: fs.as_ref(),
            queues_dir: &queues_dir,
            indexed_upto: cp.indexed_upto,
        };
        // A trusted clean-shutdown marker stands in for the scan; either way
        // the marker is gone (durably) before anything below writes.
        let (mut scan, opened) = clean::scan_or_trust(fs.as_ref(), &dir, &log_dir, &cp, &proof)?;
        let runs = std::mem::take(&mut scan.runs);
        let last = scan.last;
        for d in &scan.damage {
            tracing::warn!(kind = ?d.kind, segment = %d.segment, from = d.from, to = d.to, detail = %d.detail, "recovery found damage");
        }
        // Whatever survived a process crash may still sit only in the page
        // cache: make it durable before calling it flushed.
        for seg in scan.segments.values() {
            let len = seg.file.len().map_err(io_err(&seg.path))?;
            if seg.base + len > cp.flushed {
                seg.file.sync().map_err(io_err(&seg.path))?;
            }
        }
        let cut = cp.indexed_upto.min(scan.end);
        let mut queues = HashMap::new();
        for topic in fs.list(&queues_dir).map_err(io_err(&queues_dir))? {
            let tdir = queues_dir.join(&topic);
            for name in fs.list(&tdir).map_err(io_err(&tdir))? {
                let Some(q) = name.strip_suffix(".cq").and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let path = tdir.join(&name);
                let file = fs.open(&path, false).map_err(io_err(&path))?;
                queues.insert((topic.clone(), q), QueueIndex::open(path, file, cut)?);
            }
        }
        let keys_path = index_dir.join("keys.idx");
        let keys_file = fs.open(&keys_path, true).map_err(io_err(&keys_path))?;
        let keys = KeyIndex::open(keys_path, keys_file, cut)?;
        // `log/` too: a crash after a roll but before the flusher synced the
        // directory can leave a segment whose name is not durable yet.
        for d in [&dir, &log_dir, &index_dir, &queues_dir] {
            fs.sync_dir(d).map_err(io_err(d))?;
        }

        let segments = scan.segments;
        let active = segments
            .values()
            .next_back()
            .cloned()
            .ok_or(StorageError::NoRecord { pos: 0 })?;
        let log = CommitLog::new(fs.clone(), log_dir, opts.segment_bytes, segments);
        let epoch = cp.epoch.max(scan.max_epoch).saturating_add(1).max(opts.min_epoch);
        let mut writer = Writer {
            tail: LogTail {
                active,
                end: scan.end,
                buf: Vec::new(),
                unsynced_sealed: Vec::new(),
                dir_dirty: false,
            },
            queues,
            keys,
            new_dirs: Vec::new(),
            appended: 0,
            failed: None,
            runs,
            last,
        };
        let mut replayed = 0u64;
        for pos in &scan.replay {
            let frame = log.read_frame(*pos)?;
            let msg = record::decode(&frame).map_err(|error| StorageError::Corrupt {
                path: log.dir().to_path_buf(),
                pos: *pos,
                error,
            })?;
            let size = frame.len() as u32;
            if let Some(d) =
                super::replay::index_replayed(fs.as_ref(), &queues_dir, &mut writer, *pos, size, &msg, &scan.damage)?
            {
                tracing::error!(pos, detail = %d.detail, "recovered record refused");
                scan.damage.push(d);
                continue;
            }
            replayed += 1;
        }
        // The new epoch must be durable before any id that embeds it exists.
        checkpoint.write(epoch, scan.end, cut)?;
        tracing::info!(
            dir = %dir.display(),
            records = scan.records,
            end = scan.end,
            replayed,
            epoch,
            damage = scan.damage.len(),
            scanned = opened.scanned,
            "store opened"
        );

        let flushed = Watermark::new(scan.end);
        let space = Space::new(&dir, opts.reserve_bytes, opts.warn_bytes, opts.space_refresh);
        let shared = Arc::new(Shared {
            fs,
            queues_dir,
            opts,
            log,
            writer: Mutex::new(writer),
            appended_end: AtomicU64::new(scan.end),
            readable_end: AtomicU64::new(scan.end),
            readable_moved: tokio::sync::Notify::new(),
            flushed,
            checkpoint: Mutex::new(checkpoint),
            indexed_upto: AtomicU64::new(cut),
            epoch,
            damage: std::mem::take(&mut scan.damage),
            opened,
            opened_records: scan.records,
            space,
            counters: Counters::default(),
            shutdown: AtomicBool::new(false),
            flush_lock: Mutex::new(()),
            flusher: OnceLock::new(),
            indexer: OnceLock::new(),
        });
        let threads = flusher::start(&shared).map_err(io_err(&dir))?;
        Ok(Store {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Appends one message. With [`Flush::Sync`] the caller must still
    /// [`Store::wait_flushed`] before acknowledging it.
    pub fn append(&self, msg: NewMessage) -> Result<Appended, StorageError> {
        self.append_as(msg, None)
    }

    /// Appends one message as written by `writer` (node, epoch, stored
    /// time) instead of this store: a Raft state machine applies the same
    /// entries on every member, and identical frames at identical positions
    /// give every member the same log and the same message ids.
    pub fn append_as(&self, msg: NewMessage, writer: Option<AppendAs>) -> Result<Appended, StorageError> {
        self.append_inner(msg, writer, true)
    }

    /// `wake`: unpark the flusher in sync mode (see `Store::append_quiet`).
    pub(crate) fn append_inner(
        &self,
        msg: NewMessage,
        writer: Option<AppendAs>,
        wake: bool,
    ) -> Result<Appended, StorageError> {
        recovery::check_topic(&msg.topic)?;
        let sh = &self.shared;
        let appended = {
            let mut w = sh.lock_writer();
            if let Some(why) = &w.failed {
                return Err(StorageError::Failed(why.to_string()));
            }
            if sh.shutdown.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            let w = &mut *w;
            let queue = queue_mut(
                sh.fs.as_ref(),
                &sh.queues_dir,
                &mut w.queues,
                &mut w.new_dirs,
                &msg.topic,
                msg.queue_id,
            )?;
            let now = now_ms();
            let stored_ms = writer.map_or(now, |w| w.stored_ms);
            let stored = StoredMessage {
                node: writer.map_or(sh.opts.node_id, |w| w.node),
                epoch: writer.map_or(sh.epoch, |w| w.epoch),
                born_ms: msg.born_ms,
                stored_ms,
                queue_id: msg.queue_id,
                queue_offset: queue.next_offset(),
                tags: msg.tags,
                producer: msg.producer,
                properties: msg.properties,
                body: msg.body,
                topic: msg.topic,
                key: msg.key,
            };
            let frame = record::encode(&stored).map_err(StorageError::Encode)?;
            let appended_bytes = sh.counters.appended_bytes.load(Ordering::Relaxed);
            sh.space
                .admit(sh.fs.as_ref(), now, appended_bytes, frame.len() as u64)?;
            let pos = sh
                .log
                .append(&mut w.tail, &frame)
                .map_err(|e| fail_writes(sh, &mut w.failed, e))?;
            recovery::note_run(&mut w.runs, pos, stored.node, stored.epoch);
            w.last = Some(pos);
            if let Flush::Async { .. } = sh.opts.flush {
                // Ack after write: the frame must be in the file (page cache,
                // safe from a process crash) before append returns.
                sh.log
                    .write_out(&mut w.tail)
                    .map_err(|e| fail_writes(sh, &mut w.failed, e))?;
                sh.readable_end.store(w.tail.end, Ordering::Release);
                sh.readable_moved.notify_waiters();
            }
            queue.push(QueueEntry {
                pos,
                size: frame.len() as u32,
                tag_hash: stored.tags.as_deref().map(key_index::hash).unwrap_or(0),
            });
            if let Some(k) = &stored.key {
                w.keys.insert(k, pos);
            }
            w.appended += 1;
            sh.appended_end.store(w.tail.end, Ordering::Release);
            sh.counters.appended_msgs.fetch_add(1, Ordering::Relaxed);
            sh.counters
                .appended_bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            Appended {
                pos,
                end: w.tail.end,
                queue_offset: stored.queue_offset,
                node: stored.node,
                epoch: stored.epoch,
                stored_ms,
            }
        };
        if wake && sh.opts.flush == Flush::Sync {
            if let Some(t) = sh.flusher.get() {
                t.unpark();
            }
        }
        Ok(appended)
    }

    /// Waits until an fsync covers log position `end`.
    pub async fn wait_flushed(&self, end: u64, timeout: Duration) -> FlushOutcome {
        let rx = match self.shared.flushed.register(end) {
            Registration::Ready => return FlushOutcome::Flushed,
            Registration::Failed(why) => return FlushOutcome::Failed(why.to_string()),
            Registration::Wait(rx) => rx,
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => FlushOutcome::Flushed,
            Ok(Ok(Err(why))) => FlushOutcome::Failed(why.to_string()),
            Ok(Err(_)) => FlushOutcome::Failed("store closed".into()),
            Err(_) => FlushOutcome::TimedOut,
        }
    }

    /// Damage found by recovery at open.
    pub fn damage(&self) -> &[Damage] {
        &self.shared.damage
    }

    /// Free space of the data directory's disk, measured now.
    pub fn disk(&self) -> DiskReport {
        let appended = self.shared.counters.appended_bytes.load(Ordering::Relaxed);
        self.shared.space.report(self.shared.fs.as_ref(), now_ms(), appended)
    }

    /// Why the store refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.shared.flushed.failed().as_deref().map(str::to_string)
    }

    /// Whether an append of `bytes` would pass the free-space gate now
    /// (the same check [`Store::append_as`] makes): callers that must not
    /// fail an append (a Raft member applying a committed entry) wait on it.
    pub fn admit_space(&self, bytes: u64) -> Result<(), StorageError> {
        let sh = &self.shared;
        let appended = sh.counters.appended_bytes.load(Ordering::Relaxed);
        sh.space.admit(sh.fs.as_ref(), now_ms(), appended, bytes)
    }

    /// The data dir the store lives in.
    pub fn dir(&self) -> &std::path::Path {
        &self.shared.opts.dir
    }

    /// The file system the store writes through (the Raft log shares it).
    pub fn fs(&self) -> Arc<dyn Fs> {
        self.shared.fs.clone()
    }

    pub fn flush_mode(&self) -> Flush {
        self.shared.opts.flush
    }

    pub fn node_id(&self) -> u16 {
        self.shared.opts.node_id
    }

    pub fn epoch(&self) -> u32 {
        self.shared.epoch
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        StoreStats {
            appended_msgs: c.appended_msgs.load(Ordering::Relaxed),
            appended_bytes: c.appended_bytes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            fsync_nanos: c.fsync_nanos.load(Ordering::Relaxed),
            synced_msgs: c.synced_msgs.load(Ordering::Relaxed),
            fsync_hist: c.fsync_hist.iter().map(|a| a.load(Ordering::Relaxed)).collect(),
            log_end: self.shared.appended_end.load(Ordering::Acquire),
            flushed: self.shared.flushed.pos(),
            indexed_upto: self.shared.indexed_upto.load(Ordering::Acquire),
            segments: self.shared.log.segment_count(),
            epoch: self.shared.epoch,
            flush_waiters: self.shared.flushed.waiters(),
        }
    }

    /// Flushes the log and indexes, writes a final checkpoint and stops the
    /// background threads. Idempotent; also run on drop.
    pub fn close(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for t in [self.shared.flusher.get(), self.shared.indexer.get()]
            .into_iter()
            .flatten()
        {
            t.unpark();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("storage thread panicked");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// A write to the log failed. Frames that already have positions (and
/// senders waiting on them) may be gone, and positions would be handed out
/// again: like a failed fsync, the store refuses further writes and every
/// waiter learns its durability is unknown, so nothing is acknowledged on
/// bytes that were never written.
pub(crate) fn fail_writes(sh: &Shared, failed: &mut Option<Arc<str>>, e: StorageError) -> StorageError {
    let why: Arc<str> = Arc::from(format!("log write failed: {e}{}", enospc_note(&e)));
    tracing::error!(error = %e, "log write failed; store refuses further writes");
    *failed = Some(why.clone());
    sh.flushed.fail(why);
    e
}

/// " (ENOSPC)" when `e` is a full disk, so logs and health name it.
pub(crate) fn enospc_note(e: &StorageError) -> &'static str {
    match e {
        StorageError::Io { source, .. } if super::fs::is_enospc(source) => " (ENOSPC: the disk is full)",
        _ => "",
    }
}

/// The queue index for `(topic, queue_id)`, creating its file on first use.
pub(crate) fn queue_mut<'a>(
    fs: &dyn Fs,
    queues_dir: &Path,
    queues: &'a mut HashMap<(String, u32), QueueIndex>,
    new_dirs: &mut Vec<PathBuf>,
    topic: &str,
    queue_id: u32,
) -> Result<&'a mut QueueIndex, StorageError> {
    let k = (topic.to_string(), queue_id);
    if !queues.contains_key(&k) {
        let tdir = queues_dir.join(topic);
        if !fs.exists(&tdir) {
            fs.create_dir_all(&tdir).map_err(io_err(&tdir))?;
            new_dirs.push(queues_dir.to_path_buf());
        }
        let path = tdir.join(format!("{queue_id}.cq"));
        let file = fs.open(&path, true).map_err(io_err(&path))?;
        new_dirs.push(tdir);
        queues.insert(k.clone(), QueueIndex::open(path, file, u64::MAX)?);
    }
    queues.get_mut(&k).ok_or(StorageError::Closed)
}
