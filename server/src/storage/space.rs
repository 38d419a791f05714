//! The free-space gate: on a full disk appends are refused *before* a
//! write can fail half-way, and resume by themselves when space returns.
//!
//! Why a gate: a log write that fails after its frame got a position cannot
//! be taken back cleanly (senders wait on that position, index entries and
//! later frames follow it), so the store fails for good on one, like on a
//! failed fsync. The gate keeps a full disk from getting there: every append
//! checks, under the writer lock, the free space last measured minus the
//! bytes appended since against `StoreOptions::reserve_bytes`. Below it the
//! append is refused with [`StorageError::NoSpace`] before anything is
//! assigned; the store stays healthy and serves reads. One `statvfs` is made
//! at most every `StoreOptions::space_refresh` (100 ms), so a disk that got
//! space back admits writes again within that time. The reserve also covers the index files and the
//! checkpoint, which grow with the log. Another process filling the disk
//! faster than that window can still make a write fail with ENOSPC: the
//! store then fails, and says ENOSPC.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

use super::fs::Fs;
use super::StorageError;

/// The gate's state. Atomics so health checks read it without the writer
/// lock; only appends (serialised by that lock) and reports write it.
pub struct Space {
    dir: PathBuf,
    reserve: u64,
    warn: u64,
    /// How stale a measurement may be before an append re-measures (ms).
    refresh_ms: i64,
    available: AtomicU64,
    checked_at_ms: AtomicI64,
    /// The store's appended-bytes counter at the last measurement.
    appended_at_check: AtomicU64,
    /// Size of the last append refused, 0 once one is admitted: health says
    /// `full` while that append would still be refused.
    refused: AtomicU64,
}

/// How full the disk is, for `/healthz`, `/metrics` and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskState {
    Ok,
    /// Below the warning threshold: writes still accepted.
    Low,
    /// Below the reserve (or too close to it for the last write tried):
    /// writes refused until space returns.
    Full,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    pub state: DiskState,
    pub available_bytes: u64,
    pub reserve_bytes: u64,
    pub warn_bytes: u64,
}

impl Space {
    pub fn new(dir: &Path, reserve: u64, warn: u64, refresh: std::time::Duration) -> Space {
        Space {
            dir: dir.to_path_buf(),
            reserve,
            warn: warn.max(reserve),
            refresh_ms: i64::try_from(refresh.as_millis()).unwrap_or(i64::MAX),
            available: AtomicU64::new(u64::MAX),
            checked_at_ms: AtomicI64::new(i64::MIN),
            appended_at_check: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Admits an append of `bytes` at `now_ms`, or refuses it. `appended`
    /// is the store's running total of appended bytes.
    pub fn admit(&self, fs: &dyn Fs, now_ms: i64, appended: u64, bytes: u64) -> Result<(), StorageError> {
        if now_ms.saturating_sub(self.checked_at_ms.load(Ordering::Relaxed)) >= self.refresh_ms {
            self.measure(fs, now_ms, appended);
        }
        let since = appended.saturating_sub(self.appended_at_check.load(Ordering::Relaxed));
        let left = self.available.load(Ordering::Relaxed).saturating_sub(since);
        if left < self.reserve.saturating_add(bytes) {
            self.refused.store(bytes.max(1), Ordering::Relaxed);
            return Err(StorageError::NoSpace {
                path: self.dir.clone(),
                available: left,
                reserve: self.reserve,
            });
        }
        if self.refused.load(Ordering::Relaxed) != 0 {
            self.refused.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Measures now and reports.
    pub fn report(&self, fs: &dyn Fs, now_ms: i64, appended: u64) -> DiskReport {
        self.measure(fs, now_ms, appended);
        let available = self.available.load(Ordering::Relaxed);
        let refused = self.refused.load(Ordering::Relaxed);
        let state = if available < self.reserve.saturating_add(refused) {
            DiskState::Full
        } else if available < self.warn {
            DiskState::Low
        } else {
            DiskState::Ok
        };
        DiskReport {
            state,
            available_bytes: available,
            reserve_bytes: self.reserve,
            warn_bytes: self.warn,
        }
    }

    fn measure(&self, fs: &dyn Fs, now_ms: i64, appended: u64) {
        match fs.available(&self.dir) {
            Ok(v) => self.available.store(v, Ordering::Relaxed),
            // Unknown free space must not stop writes: the write itself
            // will say ENOSPC if it comes to that.
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "free space unknown"),
        }
        self.appended_at_check.store(appended, Ordering::Relaxed);
        self.checked_at_ms.store(now_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faultfs::FaultFs;

    #[test]
    fn refuses_below_the_reserve_counts_bytes_since_the_measurement_and_reopens_when_space_returns(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let fs = FaultFs::new();
        let f = fs.open(Path::new("/d/a"), true)?;
        fs.set_capacity(Some(10_000));
        const REFRESH_MS: i64 = 100;
        let space = Space::new(Path::new("/d"), 1_000, 5_000, std::time::Duration::from_millis(100));
        space.admit(&fs, 0, 0, 100)?;
        // 8,500 bytes appended since the measurement: 1,500 left in its
        // estimate; 600 more would leave less than the reserve.
        assert!(matches!(
            space.admit(&fs, 10, 8_500, 600),
            Err(StorageError::NoSpace { available: 1_500, .. })
        ));
        f.write_at(&[0; 9_500], 0)?;
        assert_eq!(space.report(&fs, 20, 9_500).state, DiskState::Full);
        assert!(space.admit(&fs, 30, 9_500, 1).is_err());
        // Space returns; the next append after the refresh period sees it.
        f.set_len(0)?;
        assert!(
            space.admit(&fs, 20 + REFRESH_MS - 1, 9_500, 1).is_err(),
            "not re-measured yet"
        );
        space.admit(&fs, 20 + REFRESH_MS, 9_500, 1)?;
        assert_eq!(space.report(&fs, 200, 9_500).state, DiskState::Ok);
        f.write_at(&[0; 6_000], 0)?;
        assert_eq!(space.report(&fs, 300, 9_500).state, DiskState::Low);
        Ok(())
    }
}
