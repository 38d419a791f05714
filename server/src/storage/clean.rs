//! The clean-shutdown marker: what the recovery scan would compute, written
//! by a store that closed cleanly, so that the next open can skip the scan.
//!
//! File `clean-shutdown` in the data dir (little endian):
//! ```text
//! magic u32 | version u8 | checkpoint_seq u64 | end u64 | records u64
//! | max_epoch u32 | last u64 (u64::MAX: no record)
//! | segments u32 | (base u64, len u64)* | runs u32 | (start u64, node u16, epoch u32)*
//! | crc32c u32 (of every byte before it)
//! ```
//!
//! Invariants:
//! - Written only after the final flush, index sync and checkpoint, when the
//!   log, the indexes and the checkpoint all stop at the same `end`; the file
//!   is synced and so is its directory entry. A torn write fails the CRC.
//! - Removed at open, and the removal made durable, before anything else is
//!   written, whether it was trusted or not: a crash later on never finds a
//!   marker that describes an older log.
//! - Trusted only as far as it proves itself ([`trust`]): a bounded size, its
//!   CRC, the very checkpoint it was written after (same `seq`, `flushed ==
//!   indexed_upto == end`), exactly the segment files on disk with exactly
//!   the recorded lengths, contiguous up to `end`, writer runs in order
//!   inside the log, and a last record that decodes at `last` and ends
//!   exactly at `end`. Anything off and the store scans as after a crash.
//!
//! What it cannot prove: that flushed bytes inside a segment did not rot
//! while the node was down. A scan would report such damage at open;
//! without one it surfaces when the record is read (every read checks the
//! frame's CRC, so a rotten record is never served as data).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::fs::Fs;
use super::record::{self, MIN_FRAME_LEN};
use super::recovery::{self, DamageKind, IndexProof, Scan, WriterRun};
use super::segment::Segment;
use super::{StorageError, Store};

/// The marker's file name in the data dir.
pub const FILE: &str = "clean-shutdown";
const MAGIC: u32 = 0x5343_4257; // "WBCS"
const VERSION: u8 = 1;
/// Largest marker read or written: room for some 70,000 writer runs. A log
/// with more (a very long-lived Raft group) gets no marker and is scanned;
/// a file over the bound on disk is never read into memory.
pub const MAX_BYTES: usize = 1 << 20;
const HEAD: usize = 4 + 1 + 8 + 8 + 8 + 4 + 8;
const SEGMENT: usize = 16;
const RUN: usize = 14;

/// What a scan of a cleanly closed log would find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The checkpoint written last before the marker.
    pub checkpoint_seq: u64,
    /// One past the last byte of the log.
    pub end: u64,
    /// Valid records in the log (reported at open; not provable cheaply).
    pub records: u64,
    pub max_epoch: u32,
    /// Position of the last record.
    pub last: Option<u64>,
    /// Every segment file as `(base, length)`, in order.
    pub segments: Vec<(u64, u64)>,
    pub runs: Vec<WriterRun>,
}

/// Why a marker was not trusted: the store scans instead and logs this.
#[derive(Debug, thiserror::Error)]
pub enum Distrust {
    #[error("no clean-shutdown marker (the last stop was not a clean shutdown)")]
    Absent,
    #[error("the marker is {0} bytes, over the {MAX_BYTES}-byte bound")]
    TooLarge(u64),
    #[error("the marker is malformed: {0}")]
    Malformed(&'static str),
    #[error("the marker's CRC does not match (torn or damaged)")]
    Crc,
    #[error("the marker disagrees with {what}: {detail}")]
    Mismatch { what: &'static str, detail: String },
    #[error("cannot check the marker against the files: {0}")]
    Io(#[source] StorageError),
}

/// Why a closing store wrote no marker.
#[derive(Debug, thiserror::Error)]
pub enum Unclean {
    #[error("{0}")]
    State(String),
    #[error("writing the marker failed: {0}")]
    Write(#[source] StorageError),
}

pub fn encode(m: &Marker) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + 8 + m.segments.len() * SEGMENT + m.runs.len() * RUN + 4);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(VERSION);
    out.extend_from_slice(&m.checkpoint_seq.to_le_bytes());
    out.extend_from_slice(&m.end.to_le_bytes());
    out.extend_from_slice(&m.records.to_le_bytes());
    out.extend_from_slice(&m.max_epoch.to_le_bytes());
    out.extend_from_slice(&m.last.unwrap_or(u64::MAX).to_le_bytes());
    out.extend_from_slice(&(m.segments.len() as u32).to_le_bytes());
    for (base, len) in &m.segments {
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&(m.runs.len() as u32).to_le_bytes());
    for r in &m.runs {
        out.extend_from_slice(&r.start.to_le_bytes());
        out.extend_from_slice(&r.node.to_le_bytes());
        out.extend_from_slice(&r.epoch.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Bounds-checked little-endian reads over the marker's bytes.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Distrust> {
        let s = self
            .b
            .get(self.at..self.at + N)
            .ok_or(Distrust::Malformed("truncated"))?;
        self.at += N;
        s.try_into().map_err(|_| Distrust::Malformed("truncated"))
    }
    fn u16(&mut self) -> Result<u16, Distrust> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, Distrust> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, Distrust> {
        self.take().map(u64::from_le_bytes)
    }
    /// A count of `size`-byte items, checked against the bytes left before
    /// anything is allocated for it.
    fn count(&mut self, size: usize) -> Result<usize, Distrust> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size) > self.b.len().saturating_sub(self.at) {
            return Err(Distrust::Malformed("count past the end"));
        }
        Ok(n)
    }
}

pub fn decode(b: &[u8]) -> Result<Marker, Distrust> {
    if b.len() > MAX_BYTES {
        return Err(Distrust::TooLarge(b.len() as u64));
    }
    let body_len = b.len().checked_sub(4).ok_or(Distrust::Malformed("truncated"))?;
    let (body, crc) = b.split_at(body_len);
    let mut r = Reader { b: body, at: 0 };
    if r.u32()? != MAGIC {
        return Err(Distrust::Malformed("bad magic"));
    }
    let stored = crc.try_into().map(u32::from_le_bytes).map_err(|_| Distrust::Crc)?;
    if stored != crc32c::crc32c(body) {
        return Err(Distrust::Crc);
    }
    if r.take::<1>()?[0] != VERSION {
        return Err(Distrust::Malformed("unknown version"));
    }
    let checkpoint_seq = r.u64()?;
    let end = r.u64()?;
    let records = r.u64()?;
    let max_epoch = r.u32()?;
    let last = Some(r.u64()?).filter(|l| *l != u64::MAX);
    let n = r.count(SEGMENT)?;
    let mut segments = Vec::with_capacity(n);
    for _ in 0..n {
        segments.push((r.u64()?, r.u64()?));
    }
    let n = r.count(RUN)?;
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        runs.push(WriterRun {
            start: r.u64()?,
            node: r.u16()?,
            epoch: r.u32()?,
        });
    }
    if r.at != body.len() {
        return Err(Distrust::Malformed("trailing bytes"));
    }
    Ok(Marker {
        checkpoint_seq,
        end,
        records,
        max_epoch,
        last,
        segments,
        runs,
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `m` as the marker in `dir`: the file synced, then its directory.
pub fn write(fs: &dyn Fs, dir: &Path, m: &Marker) -> Result<(), Unclean> {
    let bytes = encode(m);
    if bytes.len() > MAX_BYTES {
        return Err(Unclean::State(format!(
            "{} writer runs do not fit the marker's bound",
            m.runs.len()
        )));
    }
    let path = dir.join(FILE);
    let result = (|| -> Result<(), StorageError> {
        let file = fs.open(&path, true).map_err(io(&path))?;
        file.set_len(0).map_err(io(&path))?;
        file.write_at(&bytes, 0).map_err(io(&path))?;
        file.sync().map_err(io(&path))?;
        fs.sync_dir(dir).map_err(io(dir))
    })();
    result.map_err(Unclean::Write)
}

/// Reads the marker in `dir` (if any) and removes it, durably, before the
/// caller writes anything. The outer error is a failed removal: the store
/// must not open with a marker it can no longer take back.
pub fn take(fs: &dyn Fs, dir: &Path) -> Result<Result<Marker, Distrust>, StorageError> {
    let path = dir.join(FILE);
    if !fs.exists(&path) {
        return Ok(Err(Distrust::Absent));
    }
    let read = (|| -> Result<Result<Marker, Distrust>, StorageError> {
        let file = fs.open(&path, false).map_err(io(&path))?;
        let len = file.len().map_err(io(&path))?;
        if len > MAX_BYTES as u64 {
            return Ok(Err(Distrust::TooLarge(len)));
        }
        let mut buf = vec![0u8; len as usize];
        let n = file.read_at(&mut buf, 0).map_err(io(&path))?;
        buf.truncate(n);
        Ok(decode(&buf))
    })();
    fs.remove_file(&path).map_err(io(&path))?;
    fs.sync_dir(dir).map_err(io(dir))?;
    Ok(read.unwrap_or_else(|e| Err(Distrust::Io(e))))
}

/// The scan result `m` stands for, if the files on disk and the checkpoint
/// `cp` agree with it in everything checked here (see the module comment).
pub fn trust(fs: &dyn Fs, log_dir: &Path, m: &Marker, cp: &Checkpoint) -> Result<Scan, Distrust> {
    let off = |what, detail: String| Distrust::Mismatch { what, detail };
    if cp.seq != m.checkpoint_seq {
        let got = format!("checkpoint seq {}, the marker names {}", cp.seq, m.checkpoint_seq);
        return Err(off("the checkpoint", got));
    }
    if cp.flushed != m.end || cp.indexed_upto != m.end {
        let got = format!(
            "flushed {} and indexed {}, the marker's end is {}",
            cp.flushed, cp.indexed_upto, m.end
        );
        return Err(off("the checkpoint", got));
    }
    let mut on_disk: Vec<u64> = fs
        .list(log_dir)
        .map_err(|e| Distrust::Io(io(log_dir)(e)))?
        .iter()
        .filter_map(|n| Segment::parse_name(n))
        .collect();
    on_disk.sort_unstable();
    let named: Vec<u64> = m.segments.iter().map(|s| s.0).collect();
    if on_disk != named || named.is_empty() {
        let first_diff = on_disk.iter().zip(&named).find(|(a, b)| a != b);
        let got = format!(
            "{} on disk, {} named, first difference {first_diff:?}",
            on_disk.len(),
            named.len()
        );
        return Err(off("the segment files", got));
    }
    let first = named[0];
    let mut segments = BTreeMap::new();
    let mut expected = first;
    for &(base, len) in &m.segments {
        if base != expected {
            return Err(off(
                "itself",
                format!("segment {base} does not start where {expected} ends"),
            ));
        }
        let seg = Segment::open(fs, log_dir, base, false).map_err(|e| Distrust::Io(io(log_dir)(e)))?;
        let actual = seg.file.len().map_err(|e| Distrust::Io(io(&seg.path)(e)))?;
        if actual != len {
            let got = format!("{} is {actual} bytes, the marker says {len}", seg.path.display());
            return Err(off("a segment's length", got));
        }
        expected = base
            .checked_add(len)
            .ok_or(Distrust::Malformed("segment past the end of positions"))?;
        segments.insert(base, Arc::new(seg));
    }
    if expected != m.end {
        return Err(off(
            "the segments",
            format!("they end at {expected}, the marker at {}", m.end),
        ));
    }
    check_runs(m, first)?;
    if let Some(last) = m.last {
        // The tail is not torn: the last record decodes at `last`, ends at
        // `end` exactly, and was written by the last writer run.
        let seg = segments
            .range(..=last)
            .next_back()
            .map(|(_, s)| s.clone())
            .ok_or(Distrust::Malformed("last record before the log"))?;
        let frame = seg
            .read_frame(last)
            .map_err(|e| off("the last record", e.to_string()))?;
        let msg = record::decode(&frame).map_err(|e| off("the last record", e.to_string()))?;
        let run = m
            .runs
            .last()
            .ok_or(Distrust::Malformed("records without writer runs"))?;
        if last + frame.len() as u64 != m.end || (msg.node, msg.epoch) != (run.node, run.epoch) {
            let got = format!("record at {last} ({} bytes) is not the log's last", frame.len());
            return Err(off("the last record", got));
        }
    }
    Ok(Scan {
        segments,
        end: m.end,
        damage: Vec::new(),
        records: m.records,
        max_epoch: m.max_epoch,
        // The indexes cover the whole log (indexed_upto == end).
        replay: Vec::new(),
        runs: m.runs.clone(),
        last: m.last,
    })
}

/// Writer runs in order inside `[first, end)`, consistent with `last`,
/// `records` and `max_epoch`.
fn check_runs(m: &Marker, first: u64) -> Result<(), Distrust> {
    let bad = Distrust::Malformed;
    match (m.last, m.runs.first(), m.runs.last()) {
        (None, None, None) if m.records == 0 && m.end == first => {}
        (Some(last), Some(a), Some(z)) if a.start >= first && z.start <= last && last < m.end => {}
        _ => return Err(bad("writer runs, last record and end disagree")),
    }
    if m.runs.windows(2).any(|w| w[0].start >= w[1].start) {
        return Err(bad("writer runs out of order"));
    }
    if m.runs.iter().map(|r| r.epoch).max().unwrap_or(0) != m.max_epoch {
        return Err(bad("max epoch is not the writer runs' newest"));
    }
    let room = (m.end - first) / MIN_FRAME_LEN as u64;
    if m.records < m.runs.len() as u64 || m.records > room {
        return Err(bad("record count impossible for the log's size"));
    }
    Ok(())
}

/// How the store found its log at open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opened {
    /// False when a trusted clean-shutdown marker stood in for the scan.
    pub scanned: bool,
    /// Why the log was scanned (no marker, or what was wrong with it).
    pub why: Option<String>,
}

/// The scan of the log in `log_dir`: the marker's when it is trusted, else
/// a real one from the checkpoint `cp`. The marker is gone either way.
pub(crate) fn scan_or_trust(
    fs: &dyn Fs,
    dir: &Path,
    log_dir: &Path,
    cp: &Checkpoint,
    proof: &IndexProof<'_>,
) -> Result<(Scan, Opened), StorageError> {
    let why = match take(fs, dir)?.and_then(|m| trust(fs, log_dir, &m, cp)) {
        Ok(scan) => {
            tracing::info!(
                end = scan.end,
                records = scan.records,
                "clean shutdown: no recovery scan"
            );
            let opened = Opened {
                scanned: false,
                why: None,
            };
            return Ok((scan, opened));
        }
        Err(why) => why,
    };
    match why {
        Distrust::Absent => tracing::info!(%why, "recovery scan"),
        _ => tracing::warn!(%why, "clean-shutdown marker not trusted: recovery scan"),
    }
    let scan = recovery::scan(fs, log_dir, cp.flushed, cp.indexed_upto, proof)?;
    let opened = Opened {
        scanned: true,
        why: Some(why.to_string()),
    };
    Ok((scan, opened))
}

impl Store {
    /// Whether open scanned the log, and why (or trusted a clean shutdown).
    pub fn opened(&self) -> &Opened {
        &self.shared.opened
    }

    /// Closes the store as [`Store::close`] does (final flush, index sync,
    /// checkpoint) and then, when all it holds is flushed, indexed and
    /// checkpointed and it knows of no damage a scan would report again,
    /// writes the clean-shutdown marker so the next open skips the scan.
    /// Returns the marker, or why none was written (the next open scans).
    pub fn close_clean(&self) -> Result<Marker, Unclean> {
        self.close();
        let sh = &self.shared;
        // Held while the marker is built and written: nothing appends after
        // close anyway (the shutdown flag is checked under this lock).
        let w = sh.lock_writer();
        if let Some(why) = w.failed.clone().or_else(|| sh.flushed.failed()) {
            return Err(Unclean::State(format!("the store failed: {why}")));
        }
        let end = w.tail.end;
        let flushed = sh.flushed.pos();
        let indexed = sh.indexed_upto.load(Ordering::Acquire);
        let cp = sh.checkpoint.lock().unwrap_or_else(|p| p.into_inner()).current();
        let pending = !w.tail.buf.is_empty() || !w.tail.unsynced_sealed.is_empty() || w.tail.dir_dirty;
        if pending || !w.new_dirs.is_empty() || [flushed, indexed, cp.flushed, cp.indexed_upto] != [end; 4] {
            return Err(Unclean::State(format!(
                "not everything is flushed and indexed: end {end}, flushed {flushed}, indexed {indexed}, \
                 checkpoint {}/{}",
                cp.flushed, cp.indexed_upto
            )));
        }
        if sh.damage.iter().any(|d| d.kind != DamageKind::TornTail) {
            return Err(Unclean::State(
                "the log holds damage the next open must report again".into(),
            ));
        }
        let mut segments = Vec::new();
        for seg in sh.log.segments() {
            let len = seg.file.len().map_err(|e| Unclean::Write(io(&seg.path)(e)))?;
            segments.push((seg.base, len));
        }
        let marker = Marker {
            checkpoint_seq: cp.seq,
            end,
            records: sh.opened_records + w.appended,
            max_epoch: w.runs.iter().map(|r| r.epoch).max().unwrap_or(0),
            last: w.last,
            segments,
            runs: w.runs.clone(),
        };
        write(sh.fs.as_ref(), &sh.opts.dir, &marker)?;
        Ok(marker)
    }
}

#[cfg(test)]
#[path = "clean_tests.rs"]
mod tests;
