//! Crash recovery of the commit log: find the valid records, cut a torn
//! tail, and report (never serve, never drop neighbours of) corrupt ones.
//!
//! Every segment is scanned frame by frame from its first byte, and every
//! frame's CRC checked. Walking from frame to frame by their lengths can
//! only land on real record starts. When bytes at position `p` are not a
//! valid frame:
//! - `p` at or past the checkpoint's `flushed` mark: the bytes were never
//!   promised durable, so this is a torn tail from a crash mid-write. The
//!   segment is truncated at `p` and any later segments (which can only hold
//!   unflushed bytes) are removed. Recovery never searches for records in
//!   unflushed data: a message body may hold bytes that look like a whole
//!   valid frame (a producer can send anything), and a search could take
//!   them for a record nobody produced.
//! - `p` below `flushed`: data that was fsynced has gone bad. Recovery looks
//!   for the next record start `q` in the segment that is *proven*: a valid
//!   frame whose (topic, queue, offset) entry in the persisted consume index
//!   (below the checkpoint's `indexed_upto`) points at exactly `q` with its
//!   exact size. Only the broker writes index entries, for records it
//!   appended, so no byte sequence inside a body can be proven. `[p, q)` is
//!   reported corrupt and skipped; the records from `q` on stay. With no
//!   proven start the rest of the segment is reported corrupt and left in
//!   place as evidence; appends continue after it.
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::fs::{FileHandle, Fs};
use super::queue_index::ENTRY_LEN;
use super::record::{self, FrameError, StoredMessage, HEADER_LEN, MAGIC};
use super::segment::Segment;
use super::StorageError;

/// Bytes read per window while scanning.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// Invalid bytes between valid records, or invalid flushed bytes.
    Corrupt,
    /// An unflushed torn tail that recovery cut off.
    TornTail,
    /// The log ends before the checkpoint's flushed mark.
    MissingFlushed,
}

/// One region of the log that recovery could not read as records.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    pub kind: DamageKind,
    pub segment: String,
    /// Global log positions `[from, to)`.
    pub from: u64,
    pub to: u64,
    pub detail: String,
}

/// What the scan found.
pub struct Scan {
    pub segments: BTreeMap<u64, Arc<Segment>>,
    /// One past the last byte of the log.
    pub end: u64,
    pub damage: Vec<Damage>,
    pub records: u64,
    pub max_epoch: u32,
    /// Positions of valid records at or past `replay_from`, in log order.
    pub replay: Vec<u64>,
    /// Where each writer's run of records starts, in log order.
    pub runs: Vec<WriterRun>,
    /// Position of the last valid record.
    pub last: Option<u64>,
}

/// A run of consecutive records written by one writer — one node in one
/// boot epoch. Replication compares these histories to find where two logs
/// stop agreeing: a writer writes each position once, so two logs that hold
/// the same run from the same start hold the same bytes in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterRun {
    pub start: u64,
    pub node: u16,
    pub epoch: u32,
}

/// Adds a run to `runs` when the record at `pos` starts a new writer.
pub fn note_run(runs: &mut Vec<WriterRun>, pos: u64, node: u16, epoch: u32) {
    if runs.last().is_none_or(|r| r.node != node || r.epoch != epoch) {
        runs.push(WriterRun {
            start: pos,
            node,
            epoch,
        });
    }
}

/// Proves record starts inside flushed data from the persisted consume
/// index (see the module comment).
pub struct IndexProof<'a> {
    pub fs: &'a dyn Fs,
    /// `index/queues`.
    pub queues_dir: &'a Path,
    /// The checkpoint's `indexed_upto`: entries of records below it are in
    /// the index files and synced.
    pub indexed_upto: u64,
}

impl IndexProof<'_> {
    /// True when the consume index names `pos` as the start of `msg`'s
    /// frame of `len` bytes.
    fn proves(&self, pos: u64, msg: &StoredMessage, len: u64) -> bool {
        if pos >= self.indexed_upto || !valid_topic(&msg.topic) {
            return false;
        }
        let path = self.queues_dir.join(&msg.topic).join(format!("{}.cq", msg.queue_id));
        let Some(at) = msg.queue_offset.checked_mul(ENTRY_LEN as u64) else {
            return false;
        };
        let Ok(file) = self.fs.open(&path, false) else {
            return false;
        };
        let mut entry = [0u8; ENTRY_LEN];
        match file.read_at(&mut entry, at) {
            Ok(n) if n == ENTRY_LEN => {}
            _ => return false,
        }
        let mut p = [0u8; 8];
        p.copy_from_slice(&entry[0..8]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&entry[8..12]);
        u64::from_le_bytes(p) == pos && u64::from(u32::from_le_bytes(l)) == len
    }
}

/// Refuses a topic that cannot name a queue directory (an append's first
/// check).
pub(crate) fn check_topic(topic: &str) -> Result<(), super::StorageError> {
    if !valid_topic(topic) {
        return Err(super::StorageError::Encode(super::record::FrameError::Payload(
            "topic is not a valid file name",
        )));
    }
    Ok(())
}

/// A topic name that is safe as a directory name (no path traversal from a
/// name read off the disk).
pub fn valid_topic(topic: &str) -> bool {
    !(topic.is_empty() || topic == "." || topic == ".." || topic.contains(['/', '\0']))
}

/// A sliding read window over one file.
struct Window<'a> {
    file: &'a dyn FileHandle,
    len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> Window<'a> {
    /// Bytes `[at, at + n)`, shorter at end of file.
    fn get(&mut self, at: u64, n: usize) -> io::Result<&[u8]> {
        if at >= self.len {
            return Ok(&[]);
        }
        let want_end = (at + n as u64).min(self.len);
        let have_end = self.start + self.buf.len() as u64;
        if at < self.start || want_end > have_end {
            let size = n.max(CHUNK).min((self.len - at) as usize);
            self.buf.resize(size, 0);
            let got = self.file.read_at(&mut self.buf, at)?;
            self.buf.truncate(got);
            self.start = at;
        }
        let from = (at - self.start) as usize;
        let to = ((want_end - self.start) as usize).min(self.buf.len());
        Ok(&self.buf[from.min(to)..to])
    }

    fn frame(&mut self, at: u64) -> io::Result<Result<(StoredMessage, u64), FrameError>> {
        let head = self.get(at, HEADER_LEN)?;
        let total = match record::frame_len(head) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = self.get(at, total)?;
        Ok(record::decode(bytes).map(|m| (m, total as u64)))
    }

    /// The next position after `bad` in this segment where a valid frame
    /// starts that `proof` proves a real record start.
    fn resync(&mut self, bad: u64, base: u64, proof: &IndexProof<'_>) -> io::Result<Option<u64>> {
        let magic = MAGIC.to_le_bytes();
        let mut at = bad + 1;
        while at + HEADER_LEN as u64 <= self.len {
            let chunk = self.get(at, CHUNK)?;
            let Some(i) = chunk.windows(4).position(|w| w == magic) else {
                at += (chunk.len().saturating_sub(3)).max(1) as u64;
                continue;
            };
            let cand = at + i as u64;
            if let Ok((msg, len)) = self.frame(cand)? {
                if proof.proves(base + cand, &msg, len) {
                    return Ok(Some(cand));
                }
            }
            at = cand + 1;
        }
        Ok(None)
    }
}

enum SegmentEnd {
    Clean,
    Invalid { at: u64, error: FrameError },
}

/// Scans all segments in `dir`. `flushed` and `replay_from` come from the
/// checkpoint; `proof` vouches for record starts after flushed damage.
pub fn scan(
    fs: &dyn Fs,
    dir: &Path,
    flushed: u64,
    replay_from: u64,
    proof: &IndexProof<'_>,
) -> Result<Scan, StorageError> {
    let io_err = |path: PathBuf| move |source| StorageError::Io { path, source };
    fs.create_dir_all(dir).map_err(io_err(dir.to_path_buf()))?;
    let mut bases: Vec<u64> = fs
        .list(dir)
        .map_err(io_err(dir.to_path_buf()))?
        .iter()
        .filter_map(|n| Segment::parse_name(n))
        .collect();
    bases.sort_unstable();
    let mut out = Scan {
        segments: BTreeMap::new(),
        end: 0,
        damage: Vec::new(),
        records: 0,
        max_epoch: 0,
        replay: Vec::new(),
        runs: Vec::new(),
        last: None,
    };
    if bases.is_empty() {
        let seg = Segment::open(fs, dir, 0, true).map_err(io_err(dir.join(Segment::file_name(0))))?;
        fs.sync_dir(dir).map_err(io_err(dir.to_path_buf()))?;
        out.segments.insert(0, Arc::new(seg));
        return Ok(out);
    }
    let mut expected = bases[0];
    for (i, &base) in bases.iter().enumerate() {
        let seg = Segment::open(fs, dir, base, false).map_err(io_err(dir.join(Segment::file_name(base))))?;
        let name = Segment::file_name(base);
        if base != expected {
            if expected >= flushed && base > expected {
                // The previous segment lost an unflushed tail; everything
                // from here on was written after it and never flushed.
                remove_segments(fs, dir, &bases[i..], &mut out.damage, expected)?;
                break;
            }
            out.damage.push(Damage {
                kind: DamageKind::Corrupt,
                segment: name.clone(),
                from: expected.min(base),
                to: expected.max(base),
                detail: format!("segment starts at {base}, previous data ends at {expected}"),
            });
        }
        let len = seg.file.len().map_err(io_err(seg.path.clone()))?;
        let ending = scan_segment(&seg, len, flushed, replay_from, proof, &mut out)?;
        expected = base + len;
        if let SegmentEnd::Invalid { at, error } = ending {
            let global = base + at;
            if global >= flushed {
                seg.file.set_len(at).map_err(io_err(seg.path.clone()))?;
                seg.file.sync().map_err(io_err(seg.path.clone()))?;
                tracing::warn!(segment = %name, at = global, %error, "truncated torn tail");
                out.damage.push(Damage {
                    kind: DamageKind::TornTail,
                    segment: name,
                    from: global,
                    to: base + len,
                    detail: format!("cut {} unflushed bytes: {error}", len - at),
                });
                out.segments.insert(base, Arc::new(seg));
                out.end = global;
                if i + 1 < bases.len() {
                    remove_segments(fs, dir, &bases[i + 1..], &mut out.damage, global)?;
                }
                return Ok(out);
            }
            tracing::error!(segment = %name, from = global, to = base + len, %error, "corrupt flushed data");
            out.damage.push(Damage {
                kind: DamageKind::Corrupt,
                segment: name,
                from: global,
                to: base + len,
                detail: error.to_string(),
            });
        }
        out.segments.insert(base, Arc::new(seg));
    }
    out.end = expected;
    if out.end < flushed {
        out.damage.push(Damage {
            kind: DamageKind::MissingFlushed,
            segment: String::new(),
            from: out.end,
            to: flushed,
            detail: format!("log ends at {} but {flushed} bytes were flushed", out.end),
        });
    }
    Ok(out)
}

fn scan_segment(
    seg: &Segment,
    len: u64,
    flushed: u64,
    replay_from: u64,
    proof: &IndexProof<'_>,
    out: &mut Scan,
) -> Result<SegmentEnd, StorageError> {
    let io_err = |source| StorageError::Io {
        path: seg.path.clone(),
        source,
    };
    let mut w = Window {
        file: seg.file.as_ref(),
        len,
        start: 0,
        buf: Vec::new(),
    };
    let mut at = 0u64;
    while at < len {
        match w.frame(at).map_err(io_err)? {
            Ok((msg, total)) => {
                out.records += 1;
                out.max_epoch = out.max_epoch.max(msg.epoch);
                note_run(&mut out.runs, seg.base + at, msg.node, msg.epoch);
                out.last = Some(seg.base + at);
                if seg.base + at >= replay_from {
                    out.replay.push(seg.base + at);
                }
                at += total;
            }
            // Unflushed: a torn tail, cut by the caller; never searched.
            Err(error) if seg.base + at >= flushed => return Ok(SegmentEnd::Invalid { at, error }),
            Err(error) => match w.resync(at, seg.base, proof).map_err(io_err)? {
                Some(next) => {
                    tracing::error!(segment = %seg.path.display(), from = seg.base + at, to = seg.base + next, %error, "corrupt record skipped");
                    out.damage.push(Damage {
                        kind: DamageKind::Corrupt,
                        segment: Segment::file_name(seg.base),
                        from: seg.base + at,
                        to: seg.base + next,
                        detail: error.to_string(),
                    });
                    at = next;
                }
                None => return Ok(SegmentEnd::Invalid { at, error }),
            },
        }
    }
    Ok(SegmentEnd::Clean)
}

fn remove_segments(
    fs: &dyn Fs,
    dir: &Path,
    bases: &[u64],
    damage: &mut Vec<Damage>,
    from: u64,
) -> Result<(), StorageError> {
    for &b in bases {
        let path = dir.join(Segment::file_name(b));
        tracing::warn!(segment = %path.display(), "removing segment written past a torn tail");
        fs.remove_file(&path)
            .map_err(|source| StorageError::Io { path, source })?;
        damage.push(Damage {
            kind: DamageKind::TornTail,
            segment: Segment::file_name(b),
            from: b,
            to: b,
            detail: format!("removed: written after the torn tail at {from}"),
        });
    }
    fs.sync_dir(dir).map_err(|source| StorageError::Io {
        path: dir.to_path_buf(),
        source,
    })
}
