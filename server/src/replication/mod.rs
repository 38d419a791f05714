//! Replication: a primary streams its commit log to replicas, byte for byte.
//!
//! Modes (`--replication`): `none`; `async` (RocketMQ `ASYNC_MASTER`: the
//! primary acknowledges before a replica has the message); `sync`
//! (`SYNC_MASTER`: `SEND_OK` only once a replica confirmed it under the
//! replica's own flush mode — `FLUSH_SLAVE_TIMEOUT` when none does in time,
//! `SLAVE_NOT_AVAILABLE` when no replica is connected).
//!
//! Invariants:
//! - A replica's log is a prefix of its primary's at the same positions, so
//!   message ids (which locate a record) are valid on every member, and the
//!   consume queues, keys and consumer state (system topics) replicate with
//!   the log. Replicas never append on their own: client writes are refused
//!   and commits stay in memory until a promotion.
//! - The primary sends what is written to its segment files (in sync flush
//!   mode the replica's copy and the primary's fsync run in parallel); a
//!   replica that ends up holding bytes its primary lost (power loss
//!   before that fsync) is cut back at the next handshake.
//! - Roles change by term: promotion (`POST /api/v1/cluster/promote` or
//!   `waybill cluster promote`) takes a higher term, persisted before the
//!   node accepts writes; a node that learns of a higher term than its own
//!   stops being primary (fenced) and must rejoin as a replica.
//! - A former primary rejoining cuts its log back to where it agrees with
//!   the new primary (writer histories, see [`protocol::agreed_prefix`]),
//!   and the tracer marks the acknowledged messages it cut as lost at the
//!   `replicate` stage.
//!
//! # Layout
//! - [`node`]: what replication works with on a node (store, cluster,
//!   Raft member, event sink, consumer state), and the broker's narrow
//!   `Ship`/`Propose` traits implemented for `Cluster` and `RaftNode`.
//! - [`protocol`]: frames and the log-agreement rule.
//! - [`state`]: role, term, the persisted cluster state file.
//! - [`primary`]: serving a replica (streaming the log, reading acks).
//! - [`replica`]: following a primary (handshake, applying, acknowledging).
//! - [`status`]: asking peers who they are (startup, cluster view).
//! - [`raft`]: `--replication raft`, a Raft group built on openraft.

pub mod node;
pub mod primary;
pub mod protocol;
pub mod raft;
pub mod replica;
pub mod state;
pub mod status;

pub use node::Node;
pub use state::{Cluster, Mode, Role};

/// Errors of the replication layer.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {after:?}")]
    Timeout { addr: String, after: std::time::Duration },
    #[error("bad reply from {addr}: {why}")]
    BadReply { addr: String, why: String },
    #[error("cannot persist cluster state in {path}: {source}")]
    State {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}
