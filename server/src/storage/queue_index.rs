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
        if offset < self.persisted {
            return self.read_persisted(offset).map(Some);
        }
        let i = (offset - self.persisted) as usize;
        Ok(self.pending.get(i).copied())
    }

    fn read_persisted(&self, offset: u64) -> Result<QueueEntry, StorageError> {
        let mut b = [0u8; ENTRY_LEN];
        let n = self
            .file
            .read_at(&mut b, offset * ENTRY_LEN as u64)
            .map_err(|source| StorageError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n != ENTRY_LEN {
            return Err(StorageError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("queue index entry {offset} is short"),
                ),
            });
        }
        Ok(QueueEntry::decode(&b))
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
