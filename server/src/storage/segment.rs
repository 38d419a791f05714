//! One segment file of the commit log: `{base:020}.log`.
//!
//! Positions are global byte offsets in the log; a segment holds the bytes
//! `[base, base + len)`. Segments are contiguous: the next segment's base is
//! exactly where the previous one ended, so a message position alone names
//! its segment. Segments are never rewritten, only appended to and (during
//! recovery of a torn tail) truncated.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::{FileHandle, Fs};
use super::record::{self, FrameError};
use super::StorageError;

/// An open segment; shared by the writer, the flusher and readers.
pub struct Segment {
    /// Global position of the segment's first byte.
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<dyn FileHandle>,
}

impl Segment {
    /// File name for a segment starting at `base`.
    pub fn file_name(base: u64) -> String {
        format!("{base:020}.log")
    }

    /// Parses a segment file name back into its base, ignoring other files.
    pub fn parse_name(name: &str) -> Option<u64> {
        let digits = name.strip_suffix(".log")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// Opens (or creates) the segment starting at `base` in `dir`.
    pub fn open(fs: &dyn Fs, dir: &Path, base: u64, create: bool) -> io::Result<Segment> {
        let path = dir.join(Self::file_name(base));
        let file = fs.open(&path, create)?;
        Ok(Segment { base, path, file })
    }

    /// Reads and validates the frame starting at global position `pos`.
    pub fn read_frame(&self, pos: u64) -> Result<Vec<u8>, StorageError> {
        let local = pos - self.base;
        let io_err = |source| StorageError::Io {
            path: self.path.clone(),
            source,
        };
        // One read usually covers a whole small record; a second read fetches
        // the rest of a large one.
        let mut buf = vec![0u8; 4096];
        let n = self.file.read_at(&mut buf, local).map_err(io_err)?;
        buf.truncate(n);
        let total = record::frame_len(&buf).map_err(|e| self.bad(pos, e))?;
        if buf.len() < total {
            let have = buf.len();
            buf.resize(total, 0);
            let m = self
                .file
                .read_at(&mut buf[have..], local + have as u64)
                .map_err(io_err)?;
            if have + m < total {
                return Err(self.bad(pos, FrameError::Short(have + m)));
            }
        }
        buf.truncate(total);
        Ok(buf)
    }

    fn bad(&self, pos: u64, error: FrameError) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            pos,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(Segment::file_name(1024), "00000000000000001024.log");
        assert_eq!(Segment::parse_name("00000000000000001024.log"), Some(1024));
        assert_eq!(Segment::parse_name("1024.log"), None);
        assert_eq!(Segment::parse_name("00000000000000001024.idx"), None);
    }
}
