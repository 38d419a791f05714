//! Raft mode (`--replication raft`, like RocketMQ DLedger): a group of 3 or
//! 5 members elects a leader; a message is `SEND_OK` once a majority has its
//! entry in their Raft log; a new leader is elected automatically when the
//! leader is lost. Built on openraft; its log storage ([`log_store`]), state
//! machine ([`state_machine`]) and network ([`network`]) are ours.
//!
//! Invariants:
//! - One message (or system record) per Raft entry. The state machine
//!   appends each committed entry to the commit log *as its leader wrote
//!   it* (node = leader, epoch = term), so all members hold byte-identical
//!   commit logs and a message id means the same message on every member.
//! - Only the leader accepts writes; followers answer with the leader's
//!   address (clients retry there) and serve reads (consumption).
//! - A write that does not reach a majority within `--replica-timeout-ms`
//!   is answered `FLUSH_SLAVE_TIMEOUT` (it may still commit later, as with
//!   RocketMQ's timeouts: never `SEND_OK` without a majority).
//! - Snapshots are off and the log is never purged: a member that was down
//!   catches up from the leader's log.

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use serde::{Deserialize, Serialize};

use super::ReplicationError;
use crate::broker::Broker;
use crate::storage::fs::RealFs;
use crate::storage::{Flush, Store};

pub const K_RAFT_APPEND: u8 = 110;
pub const K_RAFT_VOTE: u8 = 111;
pub const K_RAFT_SNAPSHOT: u8 = 112;
pub const K_RAFT_REPLY: u8 = 113;

/// Whether a frame kind is a Raft RPC.
pub fn is_raft(kind: u8) -> bool {
    (K_RAFT_APPEND..=K_RAFT_SNAPSHOT).contains(&kind)
}

/// System topic of blank and membership entries.
pub const RAFT_TOPIC: &str = "%RAFT%";
/// Property of every record applied from the Raft log: its entry index.
pub const PROP_RAFT_INDEX: &str = "RAFT_INDEX";

/// One message as proposed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Msg {
    pub queue_id: u32,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub producer: Option<String>,
    pub properties: BTreeMap<String, String>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    pub born_ms: i64,
}

/// A Raft entry's application data: one message for one topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub topic: String,
    /// The leader's clock when it proposed (the record's stored time).
    pub stored_ms: i64,
    pub msg: Msg,
}

/// Where an applied entry landed in the commit log.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Placed {
    pub pos: u64,
    pub end: u64,
    pub queue_offset: u64,
    pub node: u16,
    pub epoch: u32,
    pub stored_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub placed: Option<Placed>,
}

openraft::declare_raft_types!(
    /// Waybill's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// Why a proposal got no placement.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("node {me} is not the Raft leader{hint}")]
    NotLeader { me: u16, hint: String },
    #[error("no majority confirmed within {0:?}")]
    Timeout(Duration),
    #[error("raft: {0}")]
    Raft(String),
}

/// This member of a Raft group.
pub struct RaftNode {
    pub raft: openraft::Raft<TypeConfig>,
    pub node_id: u16,
    /// Every member (this one included): id → broker address.
    pub members: BTreeMap<u16, String>,
    timeout: Duration,
    log: log_store::LogStore,
}

impl RaftNode {
    /// Opens the Raft log in `<data dir>/raft`, recovers the state machine
    /// from `store`, starts Raft; the lowest-id member initializes a new
    /// group.
    pub async fn start(
        node_id: u16,
        members: BTreeMap<u16, String>,
        data_dir: &std::path::Path,
        store: Arc<Store>,
        timeout: Duration,
        broker: Weak<Broker>,
    ) -> Result<Arc<RaftNode>, ReplicationError> {
        let dir = data_dir.join("raft");
        let io = |source| ReplicationError::State {
            path: dir.clone(),
            source,
        };
        let (sync, interval) = match store.flush_mode() {
            Flush::Sync => (true, Duration::from_millis(500)),
            Flush::Async { interval } => (false, interval),
        };
        let log = log_store::LogStore::open(Arc::new(RealFs), &dir, sync, interval).map_err(io)?;
        let sm = state_machine::StateMachine::open(store, &dir).map_err(io)?;
        let _ = sm.broker.set(broker);
        let config = openraft::Config {
            cluster_name: "waybill".into(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            max_payload_entries: 64,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ReplicationError::Refused(format!("raft config: {e}")))?;
        let raft = openraft::Raft::new(u64::from(node_id), Arc::new(config), network::Network, log.clone(), sm)
            .await
            .map_err(|e| ReplicationError::Refused(format!("raft: {e}")))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ReplicationError::Refused(format!("raft: {e}")))?;
        let lowest = members.keys().next().copied().unwrap_or(node_id);
        if !initialized && lowest == node_id {
            let nodes: BTreeMap<u64, BasicNode> = members
                .iter()
                .map(|(id, addr)| (u64::from(*id), BasicNode { addr: addr.clone() }))
                .collect();
            match raft.initialize(nodes).await {
                Ok(()) => tracing::info!(members = ?members, "raft group initialized"),
                Err(e) => tracing::warn!(error = %e, "raft initialize"),
            }
        }
        Ok(Arc::new(RaftNode {
            raft,
            node_id,
            members,
            timeout,
            log,
        }))
    }

    /// `(role, leader, term)` as this member sees it now.
    pub fn role(&self) -> (&'static str, Option<u16>, u64) {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        (
            role,
            m.current_leader.and_then(|l| u16::try_from(l).ok()),
            m.current_term,
        )
    }

    /// Raft log entries on this member.
    pub async fn log_entries(&self) -> u64 {
        self.log.last_index().await.unwrap_or(0)
    }

    fn not_leader(&self, leader: Option<u64>) -> ProposeError {
        let hint = leader
            .and_then(|l| u16::try_from(l).ok())
            .filter(|l| *l != self.node_id)
            .map(|l| {
                format!(
                    "; the leader is node {l} at {}",
                    self.members.get(&l).map_or("?", String::as_str)
                )
            })
            .unwrap_or_else(|| "; no leader is elected right now".into());
        ProposeError::NotLeader { me: self.node_id, hint }
    }

    /// Refuses early when this member is not the leader.
    pub fn check_leader(&self) -> Result<(), ProposeError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            Ok(())
        } else {
            Err(self.not_leader(m.current_leader))
        }
    }

    /// Proposes one message; returns where it landed once a majority has
    /// it and it is applied here.
    pub async fn propose(&self, topic: &str, msg: Msg) -> Result<Placed, ProposeError> {
        let req = Request {
            topic: topic.to_string(),
            stored_ms: chrono::Utc::now().timestamp_millis(),
            msg,
        };
        match tokio::time::timeout(self.timeout, self.raft.client_write(req)).await {
            Err(_) => Err(ProposeError::Timeout(self.timeout)),
            Ok(Ok(resp)) => resp
                .data
                .placed
                .ok_or_else(|| ProposeError::Raft("entry applied without a placement".into())),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(self.not_leader(f.leader_id)),
            Ok(Err(e)) => Err(ProposeError::Raft(e.to_string())),
        }
    }

    /// Serves one Raft RPC frame; returns the reply payload.
    pub async fn serve_rpc(&self, kind: u8, payload: &[u8]) -> Vec<u8> {
        fn reply<T: Serialize, E: Serialize>(r: Result<T, E>) -> Vec<u8> {
            serde_json::to_vec(&r).unwrap_or_default()
        }
        match kind {
            K_RAFT_APPEND => match serde_json::from_slice(payload) {
                Ok(req) => reply(self.raft.append_entries(req).await),
                Err(e) => reply::<(), _>(Err(fatal::<openraft::error::Infallible>(e))),
            },
            K_RAFT_VOTE => match serde_json::from_slice(payload) {
                Ok(req) => reply(self.raft.vote(req).await),
                Err(e) => reply::<(), _>(Err(fatal::<openraft::error::Infallible>(e))),
            },
            _ => match serde_json::from_slice(payload) {
                Ok(req) => reply(self.raft.install_snapshot(req).await),
                Err(e) => reply::<(), _>(Err(fatal::<openraft::error::InstallSnapshotError>(e))),
            },
        }
    }

    /// Members this one currently sees as voters.
    pub fn voters(&self) -> BTreeSet<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }
}

/// A malformed RPC: logged, answered as a fatal error to the caller.
fn fatal<E>(e: serde_json::Error) -> RaftError<u64, E> {
    tracing::warn!(error = %e, "malformed raft RPC");
    RaftError::Fatal(openraft::error::Fatal::Panicked)
}
