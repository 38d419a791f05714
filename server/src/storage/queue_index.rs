//! The consume queue of one topic queue: queue offset → log position.
//!
//! File `index/queues/{topic}/{queue_id}.cq`, fixed 20-byte entries
//! (RocketMQ's ConsumeQueue shape): `pos u64 | size u32 | tag_hash u64`.
//! Entry `n` describes the message with queue offset `n`, so lookups are a
//! single positional read. Entries are appended in memory by the writer and
//! written + synced in batches by the indexer; `persisted` counts those in
//! the file. Positions grow with the queue offset, which lets recovery cut
//! every entry at or past a log position with a binary search.
//! An entry with `size == 0` marks a queue offset whose record was lost to
//! corruption (a hole): readers skip it.
//!
//! Readers never read the file under the writer lock: [`QueueIndex::range`]
//! and [`QueueIndex::persisted_part`] take what they need under it (the
//! file handle, the persisted count, copies of in-memory entries) and the
//! file is read after the lock is released. That is safe because entries
//! below `persisted` are never rewritten while the store is open: the
//! indexer writes only at or past `persisted` and raises it (under the
//! lock) only after the bytes are written and synced; only recovery, at
//! open, before any reader, cuts a file.

use std::path::PathBuf;
use std::sync::Arc;

use super::fs::FileHandle;
use super::StorageError;

pub const ENTRY_LEN: usize = 20;

/// One consume-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry {
    pub pos: u64,
    pub size: u32,
    pub tag_hash: u64,
}

impl QueueEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pos.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.tag_hash.to_le_bytes());
    }

    fn decode(b: &[u8; ENTRY_LEN]) -> Self {
        let mut pos = [0; 8];
        let mut size = [0; 4];
        let mut tag = [0; 8];
        pos.copy_from_slice(&b[0..8]);
        size.copy_from_slice(&b[8..12]);
        tag.copy_from_slice(&b[12..20]);
        QueueEntry {
            pos: u64::from_le_bytes(pos),
            size: u32::from_le_bytes(size),
            tag_hash: u64::from_le_bytes(tag),
        }
    }

    /// True for a placeholder of a message lost to corruption.
    pub fn is_hole(&self) -> bool {
        self.size == 0
    }
}

/// One queue's index: persisted prefix in a file, newer entries in memory.
pub struct QueueIndex {
    pub path: PathBuf,
    pub file: Arc<dyn FileHandle>,
    /// Entries durably written to the file (by the indexer).
    pub persisted: u64,
    /// Entries `persisted..` not yet written.
    pub pending: Vec<QueueEntry>,
}

impl QueueIndex {
    /// Opens an index file, dropping a torn partial entry and every entry at
    /// or past `cut_from` (those get rebuilt from the log).
    pub fn open(path: PathBuf, file: Arc<dyn FileHandle>, cut_from: u64) -> Result<Self, StorageError> {
        let io = |source| StorageError::Io {
            path: path.clone(),
            source,
        };
        let len = file.len().map_err(io)?;
        let mut idx = QueueIndex {
            path: path.clone(),
            file,
            persisted: len / ENTRY_LEN as u64,
            pending: Vec::new(),
        };
        // Binary search for the first entry whose position is >= cut_from.
        let (mut lo, mut hi) = (0u64, idx.persisted);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match idx.read_persisted(mid)? {
                e if e.pos < cut_from => lo = mid + 1,
                _ => hi = mid,
            }
        }
        if lo != idx.persisted || len % ENTRY_LEN as u64 != 0 {
            idx.persisted = lo;
            idx.file.set_len(lo * ENTRY_LEN as u64).map_err(io)?;
            idx.file.sync().map_err(io)?;
        }
        Ok(idx)
    }

    /// Next queue offset to assign.
    pub fn next_offset(&self) -> u64 {
        self.persisted + self.pending.len() as u64
    }

    pub fn push(&mut self, entry: QueueEntry) {
        self.pending.push(entry);
    }

    /// The entry for `offset`, or `None` past the end.
    pub fn get(&self, offset: u64) -> Result<Option<QueueEntry>, StorageError> {
        Ok(self.range(offset, offset.saturating_add(1)).read()?.into_iter().next())
    }

    /// What reading entries `from..to` (cut at the end of the queue) needs,
    /// detached from `self`: take it under the writer lock, then
    /// [`QueueRange::read`] after releasing it.
    pub fn range(&self, from: u64, to: u64) -> QueueRange {
        let to = to.min(self.next_offset());
        if from >= to {
            return QueueRange::default();
        }
        let disk = (from < self.persisted).then(|| (self.persisted_part(), from, to.min(self.persisted)));
        let mem_from = from.saturating_sub(self.persisted) as usize;
        let mem_to = to.saturating_sub(self.persisted) as usize;
        QueueRange {
            disk,
            memory: self
                .pending
                .get(mem_from..mem_to)
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        }
    }

    /// The persisted prefix, readable without the writer lock.
    pub fn persisted_part(&self) -> Persisted {
        Persisted {
            path: self.path.clone(),
            file: self.file.clone(),
            len: self.persisted,
        }
    }

    /// Entries of this queue whose record ends at or below log position
    /// `pos`, if the in-memory entries decide it; otherwise (the boundary
    /// lies in the persisted prefix) that prefix, to search without the
    /// writer lock. Positions grow with the offset (a hole carries the
    /// position of the record after it), so "ends at or below" holds for a
    /// prefix of the queue.
    pub fn count_below(&self, pos: u64) -> CountBelow {
        let below = |e: &QueueEntry| e.pos + u64::from(e.size) <= pos;
        match self.pending.first() {
            Some(first) if below(first) => {
                CountBelow::Known(self.persisted + self.pending.partition_point(below) as u64)
            }
            _ if self.persisted == 0 => CountBelow::Known(0),
            _ => CountBelow::Search(self.persisted_part()),
        }
    }

    fn read_persisted(&self, offset: u64) -> Result<QueueEntry, StorageError> {
        self.persisted_part().get(offset)
    }

    /// Encodes the first `n` pending entries for the indexer.
    pub fn encode_pending(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * ENTRY_LEN);
        for e in &self.pending[..n] {
            e.encode(&mut out);
        }
        out
    }

    /// Marks the first `n` pending entries as written and synced.
    pub fn mark_persisted(&mut self, n: usize) {
        self.pending.drain(..n);
        self.persisted += n as u64;
    }
}

/// The persisted prefix of a queue index (entries `0..len`), detached from
/// the writer lock: those entries are in the file and never rewritten
/// while the store is open (see the module comment).
#[derive(Clone)]
pub struct Persisted {
    path: PathBuf,
    file: Arc<dyn FileHandle>,
    len: u64,
}

impl Persisted {
    /// The entry at `offset` (below `len`).
    pub fn get(&self, offset: u64) -> Result<QueueEntry, StorageError> {
        self.read(offset, offset.saturating_add(1))?
            .into_iter()
            .next()
            .ok_or_else(|| self.short(offset))
    }

    /// Entries `from..to` (`to` cut at `len`), in one positional read.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<QueueEntry>, StorageError> {
        let to = to.min(self.len);
        if from >= to {
            return Ok(Vec::new());
        }
        let count = (to - from) as usize;
        let mut b = vec![0u8; count * ENTRY_LEN];
        let n = self
            .file
            .read_at(&mut b, from * ENTRY_LEN as u64)
            .map_err(|source| StorageError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n < b.len() {
            return Err(self.short(from + (n / ENTRY_LEN) as u64));
        }
        Ok(b.chunks_exact(ENTRY_LEN)
            .filter_map(|c| <&[u8; ENTRY_LEN]>::try_from(c).ok())
            .map(QueueEntry::decode)
            .collect())
    }

    /// How many of the entries ending at or below log position `pos` (a
    /// prefix, see [`QueueIndex::count_below`]): a binary search, one read
    /// per probe. An unreadable entry counts as not below.
    pub fn count_below(&self, pos: u64) -> u64 {
        let (mut lo, mut hi) = (0u64, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Ok(e) if e.pos + u64::from(e.size) <= pos => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    fn short(&self, offset: u64) -> StorageError {
        StorageError::Io {
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("queue index entry {offset} is short"),
            ),
        }
    }
}

/// What [`QueueIndex::count_below`] found under the writer lock.
pub enum CountBelow {
    Known(u64),
    /// The count is [`Persisted::count_below`] of this prefix.
    Search(Persisted),
}

/// Entries `from..to` of a queue, taken under the writer lock: the part
/// already in the file (read by [`QueueRange::read`] after the lock is
/// released) and copies of the in-memory entries after it.
#[derive(Default)]
pub struct QueueRange {
    disk: Option<(Persisted, u64, u64)>,
    memory: Vec<QueueEntry>,
}

impl QueueRange {
    /// The entries in offset order, starting at the range's `from`.
    pub fn read(self) -> Result<Vec<QueueEntry>, StorageError> {
        let mut out = match &self.disk {
            Some((p, from, to)) => p.read(*from, *to)?,
            None => Vec::new(),
        };
        out.extend(self.memory);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faultfs::FaultFs;
    use crate::storage::fs::Fs;
    use std::path::Path;

    #[test]
    fn cut_drops_entries_at_and_past_a_position() -> Result<(), StorageError> {
        let fs = FaultFs::new();
        let path = Path::new("/q/0.cq").to_path_buf();
        let file = fs.open(&path, true).map_err(|source| StorageError::Io {
            path: path.clone(),
            source,
        })?;
        let mut idx = QueueIndex::open(path.clone(), file.clone(), u64::MAX)?;
        for i in 0..10u64 {
            idx.push(QueueEntry {
                pos: i * 100,
                size: 100,
                tag_hash: 0,
            });
        }
        let bytes = idx.encode_pending(10);
        file.write_at(&bytes, 0).map_err(|source| StorageError::Io {
            path: path.clone(),
            source,
        })?;
        idx.mark_persisted(10);
        assert_eq!(idx.get(3)?.map(|e| e.pos), Some(300));
        let reopened = QueueIndex::open(path, file, 550)?;
        assert_eq!(reopened.next_offset(), 6);
        assert_eq!(reopened.get(5)?.map(|e| e.pos), Some(500));
        assert_eq!(reopened.get(6)?, None);
        Ok(())
    }
}
