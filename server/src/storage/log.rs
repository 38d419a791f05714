//! The commit log: an ordered set of segments and the append tail.
//!
//! Invariants:
//! - Only the holder of the [`LogTail`] (the store's writer lock) appends.
//! - `LogTail::end` is the global position one past the last complete frame
//!   written; every byte below it is in some segment file (maybe unsynced).
//! - A segment is sealed when the next frame would not fit; sealed segments
//!   wait in `unsynced_sealed` until the flusher has synced them, so a flush
//!   watermark is never published past bytes of a segment nobody synced.

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
    /// Segments sealed since the last flush; the flusher syncs and drains them.
    pub unsynced_sealed: Vec<Arc<Segment>>,
    /// A segment file was created since the last flush: its directory entry
    /// must be synced before anything in it counts as durable.
    pub dir_dirty: bool,
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
    pub fn new(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        segment_bytes: u64,
        segments: BTreeMap<u64, Arc<Segment>>,
    ) -> Self {
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

    /// Appends one frame at the tail, rolling to a new segment when the
    /// active one is full. Returns the frame's global position.
    pub fn append(&self, tail: &mut LogTail, frame: &[u8]) -> Result<u64, StorageError> {
        let used = tail.end - tail.active.base;
        if used > 0 && used + frame.len() as u64 > self.segment_bytes {
            self.roll(tail)?;
        }
        let pos = tail.end;
        let local = pos - tail.active.base;
        if let Err(source) = tail.active.file.write_at(frame, local) {
            // Cut whatever part of the frame reached the file so the next
            // append starts on a clean boundary; best effort, the write error
            // is what gets reported.
            let _ = tail.active.file.set_len(local);
            return Err(StorageError::Io {
                path: tail.active.path.clone(),
                source,
            });
        }
        tail.end += frame.len() as u64;
        Ok(pos)
    }

    fn roll(&self, tail: &mut LogTail) -> Result<(), StorageError> {
        let base = tail.end;
        let seg = Segment::open(self.fs.as_ref(), &self.dir, base, true).map_err(|source| {
            StorageError::Io {
                path: self.dir.join(Segment::file_name(base)),
                source,
            }
        })?;
        let seg = Arc::new(seg);
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(base, seg.clone());
        let old = std::mem::replace(&mut tail.active, seg);
        tail.unsynced_sealed.push(old);
        tail.dir_dirty = true;
        Ok(())
    }

    /// Reads the raw frame at `pos` (validated length, not yet CRC-checked).
    pub fn read_frame(&self, pos: u64) -> Result<Vec<u8>, StorageError> {
        let seg = self
            .segment_for(pos)
            .ok_or(StorageError::NoRecord { pos })?;
        seg.read_frame(pos)
    }

    /// The segment holding position `pos`, if any.
    pub fn segment_for(&self, pos: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segs.range(..=pos).next_back().map(|(_, s)| s.clone())
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}
