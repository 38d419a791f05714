//! The store's side of replication: appending frames copied from another
//! member's log, reading whole frames out for a replica, and the facts the
//! replication layer compares (writer runs, readable end, last record).
//!
//! Invariant: frames enter here only at this log's end, CRC-checked, each
//! continuing its queue; a frame that does not is refused with
//! [`StorageError::Diverged`] and nothing after it is appended. Index
//! entries are made exactly as a local append makes them, so a copy is
//! indistinguishable from the original.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::queue_index::QueueEntry;
use super::record::{self, StoredMessage};
use super::recovery::{self, WriterRun};
use super::store::{io_err, queue_mut, Store};
use super::{key_index, Flush, StorageError};

impl Store {
    /// Appends frames copied from a primary's log at the same position
    /// (replication). `bytes` must be whole frames starting exactly at this
    /// log's end; each is CRC-checked and must continue its queue (its
    /// queue offset is the next one here), else nothing more is appended
    /// and [`StorageError::Diverged`] says why. Durability follows this
    /// store's flush mode, as for a local append. Returns the new end and
    /// the system-topic records (names starting with `%`) appended, so the
    /// broker can apply consumer state as it arrives.
    pub fn append_frames(&self, at: u64, bytes: &[u8]) -> Result<(u64, Vec<StoredMessage>), StorageError> {
        let sh = &self.shared;
        let mut system = Vec::new();
        let end = {
            let mut w = sh.lock_writer();
            if let Some(why) = &w.failed {
                return Err(StorageError::Failed(why.to_string()));
            }
            if sh.shutdown.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            if at != w.tail.end {
                return Err(StorageError::Diverged(format!(
                    "frames start at {at} but this log ends at {}",
                    w.tail.end
                )));
            }
            let appended_bytes = sh.counters.appended_bytes.load(Ordering::Relaxed);
            let now = crate::time::now_ms();
            sh.space
                .admit(sh.fs.as_ref(), now, appended_bytes, bytes.len() as u64)?;
            let w = &mut *w;
            let mut off = 0usize;
            let mut result = Ok(());
            while off < bytes.len() {
                let rest = &bytes[off..];
                let msg = match record::frame_len(rest).and_then(|n| {
                    let frame = rest.get(..n).ok_or(record::FrameError::Short(rest.len()))?;
                    record::decode(frame).map(|m| (m, n))
                }) {
                    Ok(m) => m,
                    Err(e) => {
                        result = Err(StorageError::Diverged(format!("bad frame at {}: {e}", at + off as u64)));
                        break;
                    }
                };
                let (msg, n) = msg;
                let queue = queue_mut(
                    sh.fs.as_ref(),
                    &sh.queues_dir,
                    &mut w.queues,
                    &mut w.new_dirs,
                    &msg.topic,
                    msg.queue_id,
                )?;
                if msg.queue_offset != queue.next_offset() {
                    result = Err(StorageError::Diverged(format!(
                        "record at {} has offset {} of queue {}/{} but the queue is at {}",
                        at + off as u64,
                        msg.queue_offset,
                        msg.topic,
                        msg.queue_id,
                        queue.next_offset()
                    )));
                    break;
                }
                let pos = sh
                    .log
                    .append(&mut w.tail, &rest[..n])
                    .map_err(|e| super::store::fail_writes(sh, &mut w.failed, e))?;
                queue.push(QueueEntry {
                    pos,
                    size: n as u32,
                    tag_hash: msg.tags.as_deref().map(key_index::hash).unwrap_or(0),
                });
                if let Some(k) = &msg.key {
                    w.keys.insert(k, pos);
                }
                recovery::note_run(&mut w.runs, pos, msg.node, msg.epoch);
                w.last = Some(pos);
                w.appended += 1;
                sh.counters.appended_msgs.fetch_add(1, Ordering::Relaxed);
                sh.counters.appended_bytes.fetch_add(n as u64, Ordering::Relaxed);
                if msg.topic.starts_with('%') {
                    system.push(msg);
                }
                off += n;
            }
            if let Flush::Async { .. } = sh.opts.flush {
                sh.log
                    .write_out(&mut w.tail)
                    .map_err(|e| super::store::fail_writes(sh, &mut w.failed, e))?;
                sh.readable_end.store(w.tail.end, Ordering::Release);
                sh.readable_moved.notify_waiters();
            }
            sh.appended_end.store(w.tail.end, Ordering::Release);
            result?;
            w.tail.end
        };
        if sh.opts.flush == Flush::Sync {
            if let Some(t) = sh.flusher.get() {
                t.unpark();
            }
        }
        Ok((end, system))
    }

    /// Whole frames of the log from `from` (a record boundary) up to about
    /// `max` bytes — at least one frame when one is readable — stopping at
    /// the readable end and at a segment end. Empty when nothing is there.
    pub fn read_raw(&self, from: u64, max: usize) -> Result<Vec<u8>, StorageError> {
        let readable = self.shared.readable_end.load(Ordering::Acquire);
        if from >= readable {
            return Ok(Vec::new());
        }
        let seg = self
            .shared
            .log
            .segment_for(from)
            .ok_or(StorageError::NoRecord { pos: from })?;
        let want = ((readable - from) as usize).min(max.max(record::HEADER_LEN));
        let mut buf = vec![0u8; want];
        let got = seg.file.read_at(&mut buf, from - seg.base).map_err(io_err(&seg.path))?;
        buf.truncate(got);
        let mut end = 0usize;
        while end < buf.len() {
            match record::frame_len(&buf[end..]) {
                Ok(n) if end + n <= buf.len() => end += n,
                Ok(n) if end == 0 => {
                    // One frame larger than `max`: read it whole.
                    return self.shared.log.read_frame(from).map(|f| f[..n.min(f.len())].to_vec());
                }
                _ => break,
            }
        }
        buf.truncate(end);
        Ok(buf)
    }

    /// Waits until the readable end passes `pos`, at most `timeout`.
    pub async fn wait_readable_past(&self, pos: u64, timeout: Duration) {
        let moved = self.shared.readable_moved.notified();
        tokio::pin!(moved);
        moved.as_mut().enable();
        if self.readable_end() > pos {
            return;
        }
        let _ = tokio::time::timeout(timeout, moved).await;
    }

    /// Log position every byte below which an fsync covered.
    pub fn flushed(&self) -> u64 {
        self.shared.flushed.pos()
    }

    /// The last record of the log, with its position.
    pub fn last_record(&self) -> Option<(u64, StoredMessage)> {
        let pos = self.shared.lock_writer().last?;
        let frame = self.shared.log.read_frame(pos).ok()?;
        record::decode(&frame).ok().map(|m| (pos, m))
    }

    /// The log's writer history.
    pub fn runs(&self) -> Vec<WriterRun> {
        self.shared.lock_writer().runs.clone()
    }

    /// Every byte below this is in a segment file (sync flush: fsynced).
    pub fn readable_end(&self) -> u64 {
        self.shared.readable_end.load(Ordering::Acquire)
    }

    /// The records from `from` (a record boundary) to the log end, with
    /// their positions; stops at the first unreadable one.
    pub fn records_from(&self, from: u64) -> Vec<(u64, StoredMessage)> {
        let end = self.shared.appended_end.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut pos = from;
        while pos < end {
            let Ok(frame) = self.shared.log.read_frame(pos) else {
                break;
            };
            let Ok(m) = record::decode(&frame) else { break };
            out.push((pos, m));
            pos += frame.len() as u64;
        }
        out
    }
}
