//! The disk probe the bench reports next to every sync-flush figure:
//! append 256 KiB blocks to a fresh file, `fdatasync` after each, for a few
//! seconds. It is the same baseline as `server/benches/append.rs` (256 × 1 KiB,
//! the most one group commit covers at 256 sends in flight), so the run's
//! MB/s ÷ the probe's MB/s says how much of the disk's fsync'd append
//! bandwidth the broker reaches.
//!
//! This disk's fsync latency changes on its own (≈0.3 ms ↔ ≈4 ms), so the
//! bench probes before and after the run and only compares figures of the
//! same run. The probe file lives in the directory it is given (the node's
//! data dir, or a temp dir on the same disk) and is removed afterwards.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::load::percentile_ms;
use super::BenchError;

/// Bytes per append: 256 messages of 1 KiB.
pub const BLOCK: usize = 256 * 1024;

/// One probe's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Probe {
    pub mb_per_sec: f64,
    pub fsyncs_per_sec: f64,
    /// Latency of one write + fdatasync.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Bytes per append of the raw loop: one 1 KiB message, one fdatasync.
pub const RAW_BLOCK: usize = 1024;

/// Appends + fdatasyncs `BLOCK`s in `dir` for `secs` (blocking).
pub fn run_blocking(dir: &Path, secs: f64) -> Result<Probe, BenchError> {
    loop_blocking(dir, secs, BLOCK)
}

/// Appends + fdatasyncs `block`-byte writes in `dir` for `secs`
/// (blocking). With [`RAW_BLOCK`] it is the most a broker that fsyncs each
/// message on its own could do with one producer: the sweep's baseline
/// for one send in flight.
pub fn loop_blocking(dir: &Path, secs: f64, block: usize) -> Result<Probe, BenchError> {
    let path: PathBuf = dir.join(format!("fsync-probe-{}.dat", std::process::id()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(BenchError::io(format!(
            "cannot create the probe file {}",
            path.display()
        )))?;
    let block = vec![0xabu8; block.max(1)];
    let budget = Duration::from_secs_f64(secs.max(0.05));
    let mut lat = Vec::new();
    let mut offset = 0u64;
    let start = Instant::now();
    let outcome = loop {
        if start.elapsed() >= budget {
            break Ok(());
        }
        let t = Instant::now();
        if let Err(e) = file.write_all_at(&block, offset).and_then(|_| file.sync_data()) {
            break Err(e);
        }
        offset += block.len() as u64;
        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    };
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    drop(file);
    let _ = std::fs::remove_file(&path);
    outcome.map_err(|source| BenchError::Probe { path, source })?;
    lat.sort_unstable();
    Ok(Probe {
        mb_per_sec: offset as f64 / elapsed / 1e6,
        fsyncs_per_sec: lat.len() as f64 / elapsed,
        p50_ms: percentile_ms(&lat, 0.5),
        p99_ms: percentile_ms(&lat, 0.99),
    })
}

/// [`run_blocking`] off the async runtime's worker threads.
pub async fn run(dir: PathBuf, secs: f64) -> Result<Probe, BenchError> {
    run_loop(dir, secs, BLOCK).await
}

/// [`loop_blocking`] off the async runtime's worker threads.
pub async fn run_loop(dir: PathBuf, secs: f64, block: usize) -> Result<Probe, BenchError> {
    tokio::task::spawn_blocking(move || loop_blocking(&dir, secs, block))
        .await
        .map_err(|source| BenchError::Thread { what: "probe", source })?
}

/// Mean of the probes that ran.
pub fn mean(probes: &[Probe]) -> Option<Probe> {
    if probes.is_empty() {
        return None;
    }
    let n = probes.len() as f64;
    let sum = |f: fn(&Probe) -> f64| probes.iter().map(f).sum::<f64>() / n;
    Some(Probe {
        mb_per_sec: sum(|p| p.mb_per_sec),
        fsyncs_per_sec: sum(|p| p.fsyncs_per_sec),
        p50_ms: sum(|p| p.p50_ms),
        p99_ms: sum(|p| p.p99_ms),
    })
}
