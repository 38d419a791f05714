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
//! **Indexer.** Every `index_interval` it copies the pending index entries
//! under the writer lock, writes and syncs them outside it, syncs directories
//! that gained files, then writes a checkpoint whose `indexed_upto` is the
//! log end at the time of the copy. Recovery replays the log from there.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::log::write_chunk;
use super::store::{enospc_note, Shared, FSYNC_BUCKETS_US};
use super::{Flush, StorageError};

/// How long an idle sync-mode flusher sleeps before re-checking for work or
/// shutdown; a writer's unpark normally wakes it long before.
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
        // A failed log write already failed every waiter: nothing here
        // can become durable any more.
        if sh.flushed.failed().is_some() {
            return;
        }
        match flush_once(sh) {
            Ok(false) if stopping => return,
            Ok(_) => {}
            Err(e) => {
                let (what, e) = match e {
                    Failure::Write(e) => ("log write failed", e),
                    Failure::Sync(e) => ("fsync failed", e),
                };
                let why: Arc<str> = Arc::from(format!("{what}: {e}{}", enospc_note(&e)));
                tracing::error!(error = %why, "store refuses further writes");
                sh.lock_writer().failed = Some(why.clone());
                sh.flushed.fail(why);
                return;
            }
        }
        if stopping && sh.appended_end.load(Ordering::Acquire) <= sh.flushed.pos() {
            return;
        }
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
    // segment's chunk (one write each). This thread is the only writer in
    // sync mode, and the previous cycle's writes finished before these.
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
    // Single flusher thread: a plain store of the running total is enough.
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
