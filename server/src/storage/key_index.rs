//! The key index: message key → log positions.
//!
//! File `index/keys.idx`, fixed 16-byte entries `key_hash u64 | pos u64`,
//! appended in log order. The whole index also lives in memory as a hash
//! map so a key lookup never scans the log; a hash only narrows the search,
//! the caller compares the real key of each record it reads. Like RocketMQ's
//! `KEYS`, a key string holding spaces indexes each word separately.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::fs::FileHandle;
use super::StorageError;

const ENTRY_LEN: usize = 16;

/// FNV-1a, 64 bit: stable across processes (std's hasher is randomised).
pub fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Splits a key string into the words that get indexed.
pub fn words(keys: &str) -> impl Iterator<Item = &str> {
    keys.split(' ').filter(|w| !w.is_empty())
}

pub struct KeyIndex {
    pub path: PathBuf,
    pub file: Arc<dyn FileHandle>,
    pub persisted: u64,
    pub pending: Vec<(u64, u64)>,
    map: HashMap<u64, Vec<u64>>,
}

impl KeyIndex {
    /// Loads the file, dropping a torn entry and entries at or past `cut_from`.
    pub fn open(path: PathBuf, file: Arc<dyn FileHandle>, cut_from: u64) -> Result<Self, StorageError> {
        let io = |source| StorageError::Io {
            path: path.clone(),
            source,
        };
        let len = file.len().map_err(io)?;
        let mut bytes = vec![0u8; len as usize];
        let n = file.read_at(&mut bytes, 0).map_err(io)?;
        bytes.truncate(n - n % ENTRY_LEN);
        let mut map: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut kept = 0u64;
        for chunk in bytes.chunks_exact(ENTRY_LEN) {
            let mut h = [0; 8];
            let mut p = [0; 8];
            h.copy_from_slice(&chunk[..8]);
            p.copy_from_slice(&chunk[8..]);
            let pos = u64::from_le_bytes(p);
            if pos >= cut_from {
                break;
            }
            map.entry(u64::from_le_bytes(h)).or_default().push(pos);
            kept += 1;
        }
        if kept * ENTRY_LEN as u64 != len {
            file.set_len(kept * ENTRY_LEN as u64).map_err(io)?;
            file.sync().map_err(io)?;
        }
        Ok(KeyIndex {
            path,
            file,
            persisted: kept,
            pending: Vec::new(),
            map,
        })
    }

    /// Indexes every word of `keys` at `pos`.
    pub fn insert(&mut self, keys: &str, pos: u64) {
        for w in words(keys) {
            let h = hash(w);
            self.map.entry(h).or_default().push(pos);
            self.pending.push((h, pos));
        }
    }

    /// Candidate positions for `key`, oldest first (hash matches only).
    pub fn candidates(&self, key: &str) -> Vec<u64> {
        self.map.get(&hash(key)).cloned().unwrap_or_default()
    }

    pub fn encode_pending(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * ENTRY_LEN);
        for (h, p) in &self.pending[..n] {
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(&p.to_le_bytes());
        }
        out
    }

    pub fn write_offset(&self) -> u64 {
        self.persisted * ENTRY_LEN as u64
    }

    pub fn mark_persisted(&mut self, n: usize) {
        self.pending.drain(..n);
        self.persisted += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_rocketmq_keys() {
        assert_eq!(words("a  b c").collect::<Vec<_>>(), vec!["a", "b", "c"]);
        assert_ne!(hash("a"), hash("b"));
        assert_eq!(hash("order-1"), hash("order-1"));
    }
}
