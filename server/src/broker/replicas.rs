//! What the produce path needs from replication, which sits above the
//! broker: one enum per decision, a narrow trait per mode.
//!
//! - [`Replicas::None`]: a single node, or a group with replication off.
//!   Every node writes; no virtual call on the hot path.
//! - [`Replicas::Ship`]: primary/replica log shipping (`sync`, `async`).
//!   Only the primary writes; a sync send waits for a replica's
//!   confirmation ([`Ship::wait_replicated`]).
//! - [`Replicas::Raft`]: every message goes through the Raft log and is
//!   placed by the state machine ([`Propose::propose`]).
//!
//! The replication layer implements these traits; the broker never names
//! its types. Futures are boxed: one allocation per request in a
//! replicated mode, against a network round trip.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::SendStatus;
use crate::storage::{Appended, NewMessage};

/// A boxed future a trait object can return.
pub type Wait<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Log shipping as the broker sees it.
pub trait Ship: Send + Sync {
    /// `sync` or `async`, for the trace.
    fn name(&self) -> &'static str;
    /// `Ok` while this node is the primary; otherwise why it does not
    /// accept writes (with a hint where the primary is).
    fn writable(&self) -> Result<(), String>;
    /// Sync replication: resolves once a replica confirmed `end`
    /// (`SEND_OK`), or with why not (`FLUSH_SLAVE_TIMEOUT`,
    /// `SLAVE_NOT_AVAILABLE`). Async replication: `SEND_OK` at once.
    fn wait_replicated(&self, end: u64) -> Wait<'_, SendStatus>;
}

/// Why a Raft proposal got no placement.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unplaced {
    /// This member is not the leader (the text names where it is).
    #[error("{0}")]
    NotLeader(String),
    /// Proposed but not confirmed: it may still be committed.
    #[error("{0}")]
    Unconfirmed(String),
}

/// A Raft group member as the broker sees it.
pub trait Propose: Send + Sync {
    /// `Ok` while this member is the leader.
    fn writable(&self) -> Result<(), String>;
    /// Proposes one message for `msg.topic`; resolves with where it landed
    /// once a majority has it and it is applied here.
    fn propose(&self, msg: NewMessage) -> Wait<'_, Result<Appended, Unplaced>>;
}

/// How this node replicates what it stores.
#[derive(Clone, Default)]
pub enum Replicas {
    #[default]
    None,
    Ship(Arc<dyn Ship>),
    Raft(Arc<dyn Propose>),
}

impl Replicas {
    /// The replication mode name for the trace.
    pub fn name(&self) -> &'static str {
        match self {
            Replicas::None => "none",
            Replicas::Ship(s) => s.name(),
            Replicas::Raft(_) => "raft",
        }
    }

    /// Whether this node may append now.
    pub fn writable(&self) -> Result<(), String> {
        match self {
            Replicas::None => Ok(()),
            Replicas::Ship(s) => s.writable(),
            Replicas::Raft(r) => r.writable(),
        }
    }
}
