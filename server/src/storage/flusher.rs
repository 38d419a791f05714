//! Background durability: the log flusher (group commit) and the indexer.
//!
//! **Flusher.** In sync mode it sleeps until a writer unparks it, takes a
//! snapshot of the tail under the writer lock (end position, sealed segments
//! still unsynced, the active segment), fsyncs outside the lock and then
//! publishes `flushed = end`. Writers keep appending during the fsync; the
//! next fsync covers all of them at once, so the number of messages per
//! fsync grows with the number of concurrent producers (group commit). In
//! async mode it does the same every `interval`. An fsync error fails the
//! store for good (see `store.rs`).
//!
//! **Inline flush.** A sync-mode sender that finds no group commit running
//! and no other sender waiting runs one itself, on its own thread
//! ([`super::Store::flush_inline`]): one
//! producer alone then pays write + fsync and nothing else, instead of a
//! wake-up of the flusher thread on the way in and of its own task on the
//! way out. Both kinds of cycle take `flush_lock` for the whole cycle, so
//! there is one cycle at a time and chunks reach the files in position
//! order, exactly as with the thread alone. When a cycle is running, or
//! others wait, the sender wakes the flusher thread and waits for it as
//! before: under load the thread keeps doing the group commits. Should a
//! wake-up still be missed, the thread looks for unflushed appends every
//! `IDLE_PARK` anyway: a delay, never a loss. The thread never
//! blocks on an inline cycle: it skips its turn, and the inline sender
//! unparks it afterwards if anything was appended meanwhile (an unpark
//! before the park is kept, so no wake-up is lost).
//!
//! **Indexer.** Every `index_interval` it copies the pending index entries
//! under the writer lock, writes and syncs them outside it, syncs directories
//! that gained files, then writes a checkpoint whose `indexed_upto` is the
//! log end at the time of the copy. Recovery replays the log from there.

use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::log::write_chunk;
use super::store::{enospc_note, Shared, FSYNC_BUCKETS_US};
use super::{Flush, StorageError};

/// How long an idle sync-mode flusher sleeps before re-checking for work or
/// shutdown; a sender's unpark normally wakes it long before.
const IDLE_PARK: Duration = Duration::from_millis(100);

/// Starts both threads; they stop after `shared.shutdown` is set.
pub(crate) fn start(shared: &Arc<Shared>) -> std::io::Result<Vec<JoinHandle<()>>> {
    let s = shared.clone();
    let flusher = thread::Builder::new()
        .name("waybill-flusher".into())
        .spawn(move || run_flusher(&s))?;
    let _ = shared.flusher.set(flusher.thread().clone());
    let s = shared.clone();
    let indexer = thread::Builder::new()
        .name("waybill-indexer".into())
        .spawn(move || run_indexer(&s))?;
    let _ = shared.indexer.set(indexer.thread().clone());
    Ok(vec![flusher, indexer])
}

fn run_flusher(sh: &Shared) {
    loop {
        let stopping = sh.shutdown.load(Ordering::Acquire);
        let flushed = sh.flushed.pos();
        if !stopping {
            match sh.opts.flush {
                Flush::Sync => {
                    if sh.appended_end.load(Ordering::Acquire) <= flushed {
                        thread::park_timeout(IDLE_PARK);
                        continue;
                    }
                }
                Flush::Async { interval } => thread::park_timeout(interval),
            }
        }
        // An inline flush may be running: this cycle must not overlap it.
        // Its sender unparks this thread after it, when more was appended
        // meanwhile, so waiting for that beats blocking on the lock (and
        // waking for nothing when it covered everything). Stopping takes
        // the lock: the last cycle must run.
        let guard = match sh.flush_lock.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) if !stopping => {
                thread::park_timeout(IDLE_PARK);
                continue;
            }
            Err(TryLockError::WouldBlock) => sh.flush_lock.lock().unwrap_or_else(|p| p.into_inner()),
        };
        let cycle = cycle(sh);
        drop(guard);
        match cycle {
            Some(false) if stopping => return,
            Some(_) => {}
            None => return,
        }
        if stopping && sh.appended_end.load(Ordering::Acquire) <= sh.flushed.pos() {
            return;
        }
    }
}

/// One group commit under `flush_lock` (held by the caller), failing the
/// store when it fails. `None`: the store is failed (now or before), so
/// nothing can become durable any more; otherwise whether there was work.
fn cycle(sh: &Shared) -> Option<bool> {
    // A failed log write already failed every waiter.
    if sh.flushed.failed().is_some() {
        return None;
    }
    match flush_once(sh) {
        Ok(did) => Some(did),
        Err(e) => {
            let (what, e) = match e {
                Failure::Write(e) => ("log write failed", e),
                Failure::Sync(e) => ("fsync failed", e),
            };
            let why: Arc<str> = Arc::from(format!("{what}: {e}{}", enospc_note(&e)));
            tracing::error!(error = %why, "store refuses further writes");
            sh.lock_writer().failed = Some(why.clone());
            sh.flushed.fail(why);
            None
        }
    }
}

impl super::Store {
    /// Asks the flusher for an fsync now instead of at its next interval
    /// (async flush, or after [`super::Store::append_quiet`]). The
    /// broker uses it for sends it must not answer before they are durable
    /// even under async flush. Only an unpark: the caller waits with
    /// [`super::Store::wait_flushed`].
    pub fn flush_soon(&self) {
        if let Some(t) = self.shared.flusher.get() {
            t.unpark();
        }
    }

    /// [`super::Store::append`] without waking the flusher thread: for a
    /// sender that next calls [`super::Store::flush_inline`] and, when that
    /// says no, [`super::Store::flush_soon`] before it waits. A wake-up per
    /// message costs a lone sender as much CPU as its own round trip.
    pub fn append_quiet(&self, msg: super::NewMessage) -> Result<super::Appended, StorageError> {
        self.append_inner(msg, None, false)
    }

    /// Sync flush: makes `end` durable on the caller's thread when no group
    /// commit is running (see the module doc); returns whether it is now
    /// flushed. `false` means "wait for the flusher thread as usual": a
    /// cycle is running (it or the next one covers `end`), other senders
    /// wait for one, the store is failed or shutting down, or the caller is
    /// not on a multi-threaded tokio runtime (a single-threaded one would
    /// stop everything else while the fsync runs).
    pub fn flush_inline(&self, end: u64) -> bool {
        let sh = &self.shared;
        if sh.opts.flush != super::Flush::Sync || sh.shutdown.load(Ordering::Acquire) {
            return false;
        }
        if sh.flushed.pos() >= end {
            return true;
        }
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        // Other senders waiting: a group commit is due anyway, and the
        // flusher thread runs it without taking a worker.
        if !multi || sh.flushed.waiters() > 0 {
            return false;
        }
        // try_lock: a running cycle means waiting is as fast as running one.
        let Ok(guard) = sh.flush_lock.try_lock() else {
            return false;
        };
        // On this worker, without `block_in_place`: handing the worker's
        // other tasks to another thread for the while wakes a thread per
        // message, which measured costlier than the fsync's CPU itself.
        // Blocking is bounded: one worker at a time (flush_lock), only when
        // no other sender waits, for one write and one fsync; the other
        // workers keep serving (and steal this one's queued tasks).
        let done = cycle(sh).is_some();
        drop(guard);
        // Senders that appended during this cycle found the lock taken and
        // wait for the thread, which skipped its turn while it was: wake it.
        if sh.appended_end.load(Ordering::Acquire) > sh.flushed.pos() {
            if let Some(t) = sh.flusher.get() {
                t.unpark();
            }
        }
        done && sh.flushed.pos() >= end
    }
}

/// Which step of a group commit failed: the log says which, and a full
/// disk is named.
enum Failure {
    Write(StorageError),
    Sync(StorageError),
}

/// One group commit: sync everything written up to the snapshot. Returns
/// whether there was anything to do.
fn flush_once(sh: &Shared) -> Result<bool, Failure> {
    let (end, appended, sealed, active, chunk, dir_dirty) = {
        let mut w = sh.lock_writer();
        let hint = w.tail.buf.len();
        (
            w.tail.end,
            w.appended,
            std::mem::take(&mut w.tail.unsynced_sealed),
            w.tail.active.clone(),
            std::mem::replace(&mut w.tail.buf, Vec::with_capacity(hint)),
            std::mem::replace(&mut w.tail.dir_dirty, false),
        )
    };
    let flushed = sh.flushed.pos();
    if end <= flushed && sealed.is_empty() && !dir_dirty {
        return Ok(false);
    }
    // Sync flush: the frames appended since the last cycle, in position
    // order: the tails of segments sealed since then, then the active
    // segment's chunk (one write each). Cycles are the only writers in sync
    // mode, one at a time (flush_lock), and the previous cycle's writes
    // finished before these.
    for s in &sealed {
        if !s.unwritten.is_empty() {
            write_chunk(&s.seg, s.start, &s.unwritten).map_err(Failure::Write)?;
        }
    }
    if !chunk.is_empty() {
        write_chunk(&active, end - chunk.len() as u64, &chunk).map_err(Failure::Write)?;
    }
    sh.readable_end.fetch_max(end, Ordering::AcqRel);
    sh.readable_moved.notify_waiters();
    let started = Instant::now();
    for seg in sealed.iter().map(|s| &s.seg).chain(std::iter::once(&active)) {
        seg.file.sync().map_err(|source| {
            Failure::Sync(StorageError::Io {
                path: seg.path.clone(),
                source,
            })
        })?;
    }
    if dir_dirty {
        let dir = sh.log.dir();
        sh.fs.sync_dir(dir).map_err(|source| {
            Failure::Sync(StorageError::Io {
                path: dir.to_path_buf(),
                source,
            })
        })?;
    }
    let took = started.elapsed();
    let c = &sh.counters;
    c.fsyncs.fetch_add(1, Ordering::Relaxed);
    c.fsync_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    let us = took.as_micros() as u64;
    let bucket = FSYNC_BUCKETS_US
        .iter()
        .position(|b| us <= *b)
        .unwrap_or(FSYNC_BUCKETS_US.len());
    c.fsync_hist[bucket].fetch_add(1, Ordering::Relaxed);
    // One cycle at a time (flush_lock): a plain store of the running total
    // is enough.
    c.synced_msgs.store(appended, Ordering::Relaxed);
    sh.flushed.advance(end);
    Ok(true)
}

fn run_indexer(sh: &Shared) {
    let mut last = (u64::MAX, u64::MAX);
    loop {
        let stopping = sh.shutdown.load(Ordering::Acquire);
        if !stopping {
            thread::park_timeout(sh.opts.index_interval);
        }
        // On shutdown wait for the flusher's last fsync so the final
        // checkpoint records the whole log as flushed.
        if stopping {
            if let Some(t) = sh.flusher.get() {
                t.unpark();
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while sh.flushed.pos() < sh.appended_end.load(Ordering::Acquire)
                && sh.flushed.failed().is_none()
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(1));
            }
        }
        match persist_indexes(sh, &mut last) {
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "index persist failed; will retry"),
        }
        if stopping {
            return;
        }
    }
}

struct Job {
    key: Option<(String, u32)>,
    file: Arc<dyn super::fs::FileHandle>,
    path: std::path::PathBuf,
    offset: u64,
    bytes: Vec<u8>,
    count: usize,
}

/// Writes pending index entries, syncs them and checkpoints.
fn persist_indexes(sh: &Shared, last: &mut (u64, u64)) -> Result<(), StorageError> {
    let (jobs, dirs, upto) = {
        let mut w = sh.lock_writer();
        let mut jobs = Vec::new();
        for (k, q) in &w.queues {
            if !q.pending.is_empty() {
                jobs.push(Job {
                    key: Some(k.clone()),
                    file: q.file.clone(),
                    path: q.path.clone(),
                    offset: q.persisted * super::queue_index::ENTRY_LEN as u64,
                    bytes: q.encode_pending(q.pending.len()),
                    count: q.pending.len(),
                });
            }
        }
        if !w.keys.pending.is_empty() {
            jobs.push(Job {
                key: None,
                file: w.keys.file.clone(),
                path: w.keys.path.clone(),
                offset: w.keys.write_offset(),
                bytes: w.keys.encode_pending(w.keys.pending.len()),
                count: w.keys.pending.len(),
            });
        }
        (jobs, std::mem::take(&mut w.new_dirs), w.tail.end)
    };
    let flushed = sh.flushed.pos();
    if jobs.is_empty() && dirs.is_empty() && (flushed, upto) == *last {
        return Ok(());
    }
    let result = write_jobs(sh, &jobs, &dirs);
    if let Err(e) = result {
        sh.lock_writer().new_dirs.extend(dirs);
        return Err(e);
    }
    {
        let mut w = sh.lock_writer();
        for job in &jobs {
            match &job.key {
                Some(k) => {
                    if let Some(q) = w.queues.get_mut(k) {
                        q.mark_persisted(job.count);
                    }
                }
                None => w.keys.mark_persisted(job.count),
            }
        }
    }
    let mut cp = sh.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
    cp.write(sh.epoch, flushed, upto)?;
    sh.indexed_upto.store(upto, Ordering::Release);
    *last = (flushed, upto);
    Ok(())
}

fn write_jobs(sh: &Shared, jobs: &[Job], dirs: &[std::path::PathBuf]) -> Result<(), StorageError> {
    for job in jobs {
        let io = |source| StorageError::Io {
            path: job.path.clone(),
            source,
        };
        job.file.write_at(&job.bytes, job.offset).map_err(io)?;
        job.file.sync().map_err(io)?;
    }
    // Parents after children: a topic directory's own entry lives in the
    // queues directory, which appears in `dirs` too.
    for d in dirs.iter().rev() {
        sh.fs.sync_dir(d).map_err(|source| StorageError::Io {
            path: d.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Inline flushes beside the flusher thread, on the layer that drops
    //! unsynced writes: whatever a sender was told is flushed survives a
    //! power loss byte for byte, across segment rolls.

    use std::sync::Arc;
    use std::time::Duration;

    use crate::storage::faultfs::{FaultFs, PowerLoss};
    use crate::storage::{Flush, FlushOutcome, NewMessage, Store, StoreOptions};

    fn open(fs: &FaultFs) -> Store {
        let mut o = StoreOptions::new("/data", Flush::Sync);
        o.segment_bytes = 8192;
        o.index_interval = Duration::from_millis(10);
        match Store::open(Arc::new(fs.clone()), o) {
            Ok(s) => s,
            Err(e) => panic!("open: {e}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_senders_flushing_inline_and_the_thread_when_power_is_lost_then_every_acked_message_survives() {
        let fs = FaultFs::new();
        let store = Arc::new(open(&fs));
        let mut tasks = Vec::new();
        for t in 0..6u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..150u32 {
                    let body = format!("sender {t} message {i} {}", "b".repeat((i * 7 % 300) as usize)).into_bytes();
                    let a = store
                        .append(NewMessage {
                            topic: "t".into(),
                            queue_id: t % 2,
                            body: body.clone(),
                            ..NewMessage::default()
                        })
                        .map_err(|e| e.to_string())?;
                    let inline = store.flush_inline(a.end);
                    if !inline {
                        match store.wait_flushed(a.end, Duration::from_secs(10)).await {
                            FlushOutcome::Flushed => {}
                            other => return Err(format!("not flushed: {other:?}")),
                        }
                    }
                    acked.push((a.pos, body, inline));
                }
                Ok::<_, String>(acked)
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(
                t.await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let inline = acked.iter().filter(|(_, _, i)| *i).count();
        assert!(inline > 0, "no send flushed inline");
        // The power goes with the store still open: its threads die with it.
        fs.power_loss(PowerLoss::DropUnsynced);
        drop(store);
        let store = open(&fs.reboot());
        for (pos, body, _) in &acked {
            let m = store
                .read(*pos)
                .unwrap_or_else(|e| panic!("acked message at {pos} lost: {e}"));
            assert_eq!(&m.body, body, "acked message at {pos} changed");
        }
        assert!(store.shared.log.segment_count() > 10, "the run should roll segments");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_single_threaded_runtime_never_blocks_and_waits_for_the_thread() {
        let fs = FaultFs::new();
        let store = open(&fs);
        let a = store
            .append(NewMessage {
                topic: "t".into(),
                body: b"one".to_vec(),
                ..NewMessage::default()
            })
            .unwrap_or_else(|e| panic!("append: {e}"));
        assert!(
            !store.flush_inline(a.end),
            "no worker may block on a single-threaded runtime"
        );
        assert!(matches!(
            store.wait_flushed(a.end, Duration::from_secs(10)).await,
            FlushOutcome::Flushed
        ));
    }
}
