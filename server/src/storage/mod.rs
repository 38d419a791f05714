//! Storage engine: the durable commit log and its indexes.
//!
//! Knows nothing of HTTP, SQL or the wire protocol; it could be its own crate.
//!
//! # Layout
//! - [`fs`]: the narrow file-system trait all I/O goes through ([`fs::RealFs`]).
//! - [`faultfs`]: an in-memory file system that simulates power loss and EIO.
//! - [`powercut`]: a real node's engine files on it, cut by a signal (test-only flag).
//! - [`record`]: the framed, CRC32C-checked record format.
//! - [`segment`]: one `{base:020}.log` segment file.
//! - [`log`]: the segment set and the append tail (rolls segments).
//! - [`queue_index`]: per topic queue, queue offset → log position.
//! - [`key_index`]: message key → log positions.
//! - [`checkpoint`]: flushed / indexed watermarks and the boot epoch.
//! - [`clean`]: the clean-shutdown marker that lets an open skip the scan.
//! - [`recovery`]: start-up scan, torn-tail truncation, corruption report.
//! - [`flusher`]: the group-commit fsync thread and the index writer thread.
//! - [`watermark`]: the flushed position and the appends waiting on it.
//! - [`space`]: the free-space gate that refuses appends on a full disk.
//! - [`reads`]: reading records back (by position, key, queue offset).
//! - [`seek`]: the first queue offset stored at or after a time.
//! - [`replay`]: re-indexing records found past the checkpoint.
//! - [`store`]: the facade tying them together (append, wait, read, lookup).
//! - [`copy`]: the store's replication side (append copied frames, read
//!   whole frames, writer runs).
//! - [`truncate`]: cutting a closed store's log back (a rejoining primary).
//!
//! # Data directory
//! ```text
//! log/{base:020}.log              commit log segments
//! index/queues/{topic}/{q}.cq     consume queues (20-byte entries)
//! index/keys.idx                  key index (16-byte entries)
//! checkpoint                      two CRC'd slots
//! clean-shutdown                  what the scan would find (only while stopped cleanly)
//! ```

pub mod checkpoint;
pub mod clean;
pub mod copy;
pub mod faultfs;
pub mod flusher;
pub mod fs;
pub mod key_index;
pub mod log;
pub mod powercut;
pub mod queue_index;
pub mod reads;
pub mod record;
pub mod recovery;
pub mod replay;
pub mod seek;
pub mod segment;
pub mod space;
pub mod store;
pub mod truncate;
pub mod watermark;

use std::path::PathBuf;
use std::time::Duration;

pub use record::{FrameError, StoredMessage};
pub use recovery::{Damage, DamageKind, WriterRun};
pub use store::{AppendAs, Appended, FlushOutcome, NewMessage, Store, StoreStats};

/// When an append is acknowledged relative to fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Ack after an fsync covers the message (group commit).
    Sync,
    /// Ack after the write; a background fsync runs every `interval`.
    Async { interval: Duration },
}

/// Tunables of one store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub dir: PathBuf,
    pub flush: Flush,
    /// Size at which a segment is sealed and a new one started.
    pub segment_bytes: u64,
    /// How often index entries are written, synced and checkpointed. Longer
    /// means fewer syncs competing with the log's; recovery replays at most
    /// this much log.
    pub index_interval: Duration,
    /// Node id embedded in message ids.
    pub node_id: u16,
    /// Appends are refused while the disk has less free space than this
    /// (and resume by themselves once it is back), so that a full disk
    /// never fails a write half-way: see [`space`].
    pub reserve_bytes: u64,
    /// Below this much free space the store reports the disk as low.
    pub warn_bytes: u64,
    /// How stale the free-space measurement may get before an append
    /// measures again: how soon writes resume after space returns, and how
    /// long another process filling the disk can go unseen.
    pub space_refresh: Duration,
    /// Lowest epoch this boot may take: a node whose data dir was lost
    /// learns its old epochs from its group and must not reuse one (ids
    /// embed the epoch, and the tracer tells boots apart by it).
    pub min_epoch: u32,
}

impl StoreOptions {
    pub fn new(dir: impl Into<PathBuf>, flush: Flush) -> Self {
        StoreOptions {
            dir: dir.into(),
            flush,
            segment_bytes: 1 << 30,
            index_interval: Duration::from_millis(1000),
            node_id: 1,
            min_epoch: 0,
            reserve_bytes: 64 << 20,
            warn_bytes: 1 << 30,
            space_refresh: Duration::from_millis(100),
        }
    }
}

/// Errors of the storage layer; each carries the file and position involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record at log position {pos} in {path}: {error}")]
    Corrupt {
        path: PathBuf,
        pos: u64,
        #[source]
        error: FrameError,
    },
    #[error("no record at log position {pos}")]
    NoRecord { pos: u64 },
    #[error("message cannot be stored: {0}")]
    Encode(#[source] FrameError),
    #[error("store failed and refuses writes: {0}")]
    Failed(String),
    #[error("no space left on device (ENOSPC): {available} bytes free in {path}, and writes keep a {reserve}-byte reserve free; they resume when space is freed")]
    NoSpace {
        path: PathBuf,
        available: u64,
        reserve: u64,
    },
    #[error("store is closed")]
    Closed,
    #[error("replicated log does not continue this one: {0}")]
    Diverged(String),
}
