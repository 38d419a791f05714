//! The checkpoint: what is known flushed and indexed, and the boot epoch.
//!
//! File `checkpoint`, two 64-byte slots written alternately (A/B), each
//! `magic u32 | seq u64 | epoch u32 | flushed u64 | indexed_upto u64 | crc u32`.
//! A torn slot write leaves the other slot intact, so one `sync` per update
//! suffices and no rename dance is needed. On read the valid slot with the
//! highest `seq` wins; if neither is valid the store rebuilds its indexes
//! from the whole log, which is slow but loses nothing.
//!
//! Meaning of the fields:
//! - `flushed`: every log byte below it had been fsynced when this was written.
//!   Recovery uses it to tell a torn tail (past it) from corruption (before it).
//! - `indexed_upto`: every index entry of a record below it is in the index
//!   files and synced; recovery replays the log from here.
//! - `epoch`: the boot epoch in force; message ids embed it, so ids stay
//!   unique across restarts even if a torn tail hands a position out again.

use std::path::PathBuf;
use std::sync::Arc;

use super::fs::FileHandle;
use super::StorageError;

const MAGIC: u32 = 0x4B43_4257; // "WBCK"
const SLOT: u64 = 64;
const BODY: usize = 4 + 8 + 4 + 8 + 8;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub epoch: u32,
    pub flushed: u64,
    pub indexed_upto: u64,
}

pub struct CheckpointFile {
    path: PathBuf,
    file: Arc<dyn FileHandle>,
    last: Checkpoint,
}

impl CheckpointFile {
    /// Opens the checkpoint file and reads its newest valid slot.
    pub fn open(path: PathBuf, file: Arc<dyn FileHandle>) -> Result<Self, StorageError> {
        let mut buf = [0u8; 2 * SLOT as usize];
        let n = file.read_at(&mut buf, 0).map_err(|source| StorageError::Io {
            path: path.clone(),
            source,
        })?;
        let mut best = Checkpoint::default();
        for slot in 0..2 {
            let start = slot * SLOT as usize;
            if n < start + BODY + 4 {
                continue;
            }
            if let Some(cp) = decode(&buf[start..start + BODY + 4]) {
                if cp.seq >= best.seq {
                    best = cp;
                }
            }
        }
        Ok(CheckpointFile { path, file, last: best })
    }

    /// The newest checkpoint read or written (all zero when none was valid).
    pub fn current(&self) -> Checkpoint {
        self.last
    }

    /// Writes a new checkpoint into the older slot and syncs it.
    pub fn write(&mut self, epoch: u32, flushed: u64, indexed_upto: u64) -> Result<(), StorageError> {
        let cp = Checkpoint {
            seq: self.last.seq + 1,
            epoch,
            flushed,
            indexed_upto,
        };
        let bytes = encode(&cp);
        let io = |source| StorageError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_at(&bytes, (cp.seq % 2) * SLOT).map_err(io)?;
        self.file.sync().map_err(io)?;
        self.last = cp;
        Ok(())
    }
}

fn encode(cp: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(BODY + 4);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&cp.seq.to_le_bytes());
    out.extend_from_slice(&cp.epoch.to_le_bytes());
    out.extend_from_slice(&cp.flushed.to_le_bytes());
    out.extend_from_slice(&cp.indexed_upto.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(b: &[u8]) -> Option<Checkpoint> {
    let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
    let u64_at = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
    if u32_at(0)? != MAGIC || u32_at(BODY)? != crc32c::crc32c(b.get(..BODY)?) {
        return None;
    }
    Some(Checkpoint {
        seq: u64_at(4)?,
        epoch: u32_at(12)?,
        flushed: u64_at(16)?,
        indexed_upto: u64_at(24)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faultfs::FaultFs;
    use crate::storage::fs::Fs;
    use std::path::Path;

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() -> Result<(), Box<dyn std::error::Error>> {
        let fs = FaultFs::new();
        let path = Path::new("/d/checkpoint").to_path_buf();
        let file = fs.open(&path, true)?;
        let mut cp = CheckpointFile::open(path.clone(), file.clone())?;
        assert_eq!(cp.current(), Checkpoint::default());
        cp.write(1, 100, 50)?;
        cp.write(1, 200, 150)?;
        let again = CheckpointFile::open(path.clone(), file.clone())?;
        assert_eq!(again.current().flushed, 200);
        // Tear the newest slot (seq 2 lives in slot 0).
        fs.corrupt_byte(&path, 10)?;
        let torn = CheckpointFile::open(path, file)?;
        assert_eq!(torn.current().flushed, 100);
        Ok(())
    }
}
