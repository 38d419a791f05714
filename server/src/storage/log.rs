//! The commit log: an ordered set of segments and the append tail.
//!
//! Invariants:
//! - Only the holder of the [`LogTail`] (the store's writer lock) appends.
//! - `LogTail::end` is the global position one past the last frame appended.
//!   Frames are first copied into `LogTail::buf` (positions
//!   `[end - buf.len(), end)`, all in the active segment); every byte below
//!   that is in some segment file (maybe unsynced). With async flush the
//!   appender writes the buffer out at once (ack after write); with sync
//!   flush the flusher takes it and writes it with one `pwrite` right before
//!   its fsync, so a group commit costs one write and one fsync instead of a
//!   write per message.
//! - A segment is sealed when the next frame would not fit; sealed segments
//!   wait in `unsynced_sealed` until the flusher has synced them, so a flush
//!   watermark is never published past bytes of a segment nobody synced.
//! - Bytes reach the files in position order, so a crash never leaves a
//!   hole (zeros) before bytes that were written. With sync flush only the
//!   flusher writes: a roll does not write the tail buffer itself (the
//!   flusher may still hold an earlier chunk of the same segment, taken but
//!   not yet written); it hands the buffer over with the sealed segment and
//!   the flusher writes sealed tails, then the active chunk, in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::fs::Fs;
use super::segment::Segment;
use super::StorageError;

/// The append position, owned by the writer.
pub struct LogTail {
    pub active: Arc<Segment>,
    pub end: u64,
    /// Appended frames not yet written to `active`'s file.
    pub buf: Vec<u8>,
    /// Segments sealed since the last flush, with their bytes not yet
    /// written; the flusher writes, syncs and drains them in order.
    pub unsynced_sealed: Vec<Sealed>,
    /// A segment file was created since the last flush: its directory entry
    /// must be synced before anything in it counts as durable.
    pub dir_dirty: bool,
}

/// A sealed segment waiting for the flusher.
pub struct Sealed {
    pub seg: Arc<Segment>,
    /// Global position of `unwritten[0]`: the segment's last frames, which
    /// were still in the tail buffer when it was sealed (sync flush).
    pub start: u64,
    pub unwritten: Vec<u8>,
}

/// Writes `bytes` at global position `start` of `seg`; on failure cuts the
/// file back so the next write starts on a frame boundary.
pub fn write_chunk(seg: &Segment, start: u64, bytes: &[u8]) -> Result<(), StorageError> {
    let local = start - seg.base;
    seg.file.write_at(bytes, local).map_err(|source| {
        // Best effort: the write error is what gets reported.
        let _ = seg.file.set_len(local);
        StorageError::Io {
            path: seg.path.clone(),
            source,
        }
    })
}

/// Segment lookup shared by readers.
pub struct CommitLog {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segment_bytes: u64,
    // RwLock: lookups by position run on every read; the write lock is taken
    // only to add a segment on roll.
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
}

impl CommitLog {
    /// Wraps recovered segments (at least one).
    pub fn new(fs: Arc<dyn Fs>, dir: PathBuf, segment_bytes: u64, segments: BTreeMap<u64, Arc<Segment>>) -> Self {
        CommitLog {
            fs,
            dir,
            segment_bytes,
            segments: RwLock::new(segments),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one frame to the tail buffer, rolling to a new segment when
    /// the active one is full. Returns the frame's global position.
    pub fn append(&self, tail: &mut LogTail, frame: &[u8]) -> Result<u64, StorageError> {
        let used = tail.end - tail.active.base;
        if used > 0 && used + frame.len() as u64 > self.segment_bytes {
            self.roll(tail)?;
        }
        let pos = tail.end;
        tail.buf.extend_from_slice(frame);
        tail.end += frame.len() as u64;
        Ok(pos)
    }

    /// Writes the tail buffer into the active segment (under the writer lock).
    pub fn write_out(&self, tail: &mut LogTail) -> Result<(), StorageError> {
        if tail.buf.is_empty() {
            return Ok(());
        }
        let start = tail.end - tail.buf.len() as u64;
        let result = write_chunk(&tail.active, start, &tail.buf);
        if result.is_err() {
            // The frames never reached the file: forget them, so positions
            // stay contiguous with what is really there.
            tail.end = start;
        }
        tail.buf.clear();
        result
    }

    fn roll(&self, tail: &mut LogTail) -> Result<(), StorageError> {
        // Not written here: an earlier chunk of this segment may still be on
        // its way to the file (taken by the flusher, not yet written), and
        // writing past it would leave a hole if the power went in between.
        let base = tail.end;
        let seg = Segment::open(self.fs.as_ref(), &self.dir, base, true).map_err(|source| StorageError::Io {
            path: self.dir.join(Segment::file_name(base)),
            source,
        })?;
        let seg = Arc::new(seg);
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(base, seg.clone());
        let old = std::mem::replace(&mut tail.active, seg);
        let unwritten = std::mem::take(&mut tail.buf);
        tail.unsynced_sealed.push(Sealed {
            seg: old,
            start: base - unwritten.len() as u64,
            unwritten,
        });
        tail.dir_dirty = true;
        Ok(())
    }

    /// Reads the raw frame at `pos` (validated length, not yet CRC-checked).
    pub fn read_frame(&self, pos: u64) -> Result<Vec<u8>, StorageError> {
        let seg = self.segment_for(pos).ok_or(StorageError::NoRecord { pos })?;
        seg.read_frame(pos)
    }

    /// The segment holding position `pos`, if any.
    pub fn segment_for(&self, pos: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segs.range(..=pos).next_back().map(|(_, s)| s.clone())
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every segment, in position order.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segs.values().cloned().collect()
    }
}
