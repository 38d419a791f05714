//! Cutting a closed store's log back to a position (replication rejoin).
//!
//! A former primary that rejoins as a replica may hold records the new
//! primary never received; they must go before it copies the new primary's
//! log, or positions would disagree. Runs on a *closed* store: segment
//! files past `at` are removed, the segment holding `at` is cut there, and
//! the checkpoint's flushed and indexed marks are lowered to `at`, so the
//! next open rebuilds the index entries past it from the log (the queue
//! and key indexes drop entries at or past the checkpoint on open).
//! Order matters for a crash in between: the checkpoint is lowered first,
//! then files are cut; a crash after the first step only makes the next
//! open replay more log.

use std::path::Path;

use super::checkpoint::CheckpointFile;
use super::fs::Fs;
use super::segment::Segment;
use super::StorageError;

/// Cuts the log of the store in `dir` to end at `at` (a record boundary).
pub fn truncate(fs: &dyn Fs, dir: &Path, at: u64) -> Result<(), StorageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StorageError::Io { path, source }
    };
    let cp_path = dir.join("checkpoint");
    let cp_file = fs.open(&cp_path, true).map_err(io(&cp_path))?;
    let mut checkpoint = CheckpointFile::open(cp_path, cp_file)?;
    let cp = checkpoint.current();
    checkpoint.write(cp.epoch, cp.flushed.min(at), cp.indexed_upto.min(at))?;

    let log_dir = dir.join("log");
    let mut bases: Vec<u64> = fs
        .list(&log_dir)
        .map_err(io(&log_dir))?
        .iter()
        .filter_map(|n| Segment::parse_name(n))
        .collect();
    bases.sort_unstable();
    for base in bases.into_iter().rev() {
        let path = log_dir.join(Segment::file_name(base));
        if base >= at && base > 0 {
            fs.remove_file(&path).map_err(io(&path))?;
            continue;
        }
        let file = fs.open(&path, false).map_err(io(&path))?;
        let len = file.len().map_err(io(&path))?;
        if base + len > at {
            file.set_len(at - base).map_err(io(&path))?;
            file.sync().map_err(io(&path))?;
        }
        break;
    }
    fs.sync_dir(&log_dir).map_err(io(&log_dir))?;
    Ok(())
}
