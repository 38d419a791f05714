//! What the replication layer works with on one node, and the narrow
//! traits it implements for the broker below it.
//!
//! Primary, replica and status code take a [`Node`]: the store, the
//! cluster state, the Raft member (Raft mode), the event sink (replica
//! confirmations for the trace) and the consumer state that replicated
//! system records are applied to. None of them reaches the broker.
//!
//! [`Cluster`] is the broker's [`Ship`] (primary/replica modes) and
//! [`RaftNode`] its [`Propose`] (Raft mode); `server.rs` hands them to the
//! broker as a [`Replicas`] value at construction.

use std::sync::Arc;

use super::raft::{Msg, ProposeError, RaftNode};
use super::{Cluster, Mode, Role};
use crate::broker::replicas::{Propose, Replicas, Ship, Unplaced, Wait};
use crate::broker::{Applied, Events, SendStatus};
use crate::storage::{Appended, NewMessage, Store};

/// This node as replication sees it.
#[derive(Clone)]
pub struct Node {
    pub store: Arc<Store>,
    pub cluster: Arc<Cluster>,
    /// Raft mode: this member of the group.
    pub raft: Option<Arc<RaftNode>>,
    /// Where replica confirmations go (the trace's replicate stage).
    pub events: Arc<dyn Events>,
    /// Where system records applied from a primary's stream go.
    pub applied: Arc<dyn Applied>,
}

impl Node {
    /// What the broker is given: Raft, log shipping, or nothing to wait for.
    pub fn replicas(&self) -> Replicas {
        if let Some(r) = &self.raft {
            return Replicas::Raft(r.clone());
        }
        match self.cluster.mode {
            Mode::None => Replicas::None,
            _ => Replicas::Ship(self.cluster.clone()),
        }
    }
}

impl Ship for Cluster {
    fn name(&self) -> &'static str {
        self.mode.name()
    }

    fn writable(&self) -> Result<(), String> {
        if self.mode == Mode::None {
            return Ok(());
        }
        match self.role() {
            Role::Primary => Ok(()),
            role => {
                let hint = match self.primary().filter(|p| *p != self.node_id) {
                    Some(p) => format!(
                        "; the primary is node {p} at {}",
                        self.peers.get(&p).map_or("?", String::as_str)
                    ),
                    None => String::new(),
                };
                Err(format!(
                    "node {} is a {} and does not accept writes{hint}",
                    self.node_id,
                    role.name()
                ))
            }
        }
    }

    fn wait_replicated(&self, end: u64) -> Wait<'_, SendStatus> {
        Box::pin(async move {
            match self.mode {
                Mode::Sync => Cluster::wait_replicated(self, end).await,
                _ => SendStatus::SendOk,
            }
        })
    }
}

impl Propose for RaftNode {
    fn writable(&self) -> Result<(), String> {
        self.check_leader().map_err(|e| e.to_string())
    }

    fn propose(&self, m: NewMessage) -> Wait<'_, Result<Appended, Unplaced>> {
        Box::pin(async move {
            let msg = Msg {
                queue_id: m.queue_id,
                key: m.key,
                tags: m.tags,
                producer: m.producer,
                properties: m.properties,
                body: m.body,
                born_ms: m.born_ms,
            };
            RaftNode::propose(self, &m.topic, msg).await.map_err(|e| match e {
                ProposeError::NotLeader { .. } => Unplaced::NotLeader(e.to_string()),
                other => Unplaced::Unconfirmed(other.to_string()),
            })
        })
    }
}
