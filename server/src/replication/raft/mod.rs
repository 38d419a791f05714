//! Raft mode (`--replication raft`, like RocketMQ DLedger): a group of 3 or
//! 5 members elects a leader; a message is `SEND_OK` once a majority has its
//! entry in their Raft log; a new leader is elected automatically when the
//! leader is lost. Built on openraft; its log storage ([`log_store`]), state
//! machine ([`state_machine`]) and network ([`network`]) are ours.
//!
//! Invariants:
//! - Concurrent sends coalesce into one Raft entry (a group commit: while
//!   up to 8 entries are out, new sends wait and join the next one). The
//!   state machine appends each committed entry's messages to the commit
//!   log *as its leader wrote them* (node = leader, epoch = term), so all
//!   members hold byte-identical commit logs and a message id means the
//!   same message on every member.
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
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use serde::{Deserialize, Serialize};

use super::ReplicationError;
use crate::broker::Applied;
use crate::storage::{Appended, Flush, Store};

pub const K_RAFT_APPEND: u8 = 110;
pub const K_RAFT_VOTE: u8 = 111;
pub const K_RAFT_SNAPSHOT: u8 = 112;
pub const K_RAFT_REPLY: u8 = 113;

/// Whether a frame kind is a Raft RPC.
pub fn is_raft(kind: u8) -> bool {
    (K_RAFT_APPEND..=K_RAFT_SNAPSHOT).contains(&kind)
}

pub use crate::model::topics::RAFT_TOPIC;
/// Property of every record applied from the Raft log (producers may not
/// set it: see `waybill_client::properties`).
pub use waybill_client::properties::PROP_RAFT_ENTRY;

/// Messages coalesced into one entry at most, and their body bytes.
const MAX_ENTRY_MSGS: usize = 1024;
const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Entries proposed and not yet answered at once.
const MAX_IN_FLIGHT_ENTRIES: usize = 8;

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

/// A Raft entry's application data: the messages proposed together
/// (concurrent sends coalesce into one entry, like a group commit).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The leader's clock when it proposed (the records' stored time).
    pub stored_ms: i64,
    /// `(topic, message)` in append order.
    pub msgs: Vec<(String, Msg)>,
}

/// Where each message of an entry landed, in the entry's order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub placed: Vec<Appended>,
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
#[derive(Debug, Clone, thiserror::Error)]
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
    log: log_store::LogStore,
    proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
}

/// One message waiting to go into an entry.
struct Proposal {
    topic: String,
    msg: Msg,
    reply: tokio::sync::oneshot::Sender<Result<Appended, ProposeError>>,
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
        applied: Arc<dyn Applied>,
        link: crate::replication::status::Link,
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
        let log = log_store::LogStore::open(store.fs(), &dir, sync, interval).map_err(io)?;
        let sm = state_machine::StateMachine::open(store, &dir, &log, applied)
            .await
            .map_err(io)?;
        let config = openraft::Config {
            cluster_name: "waybill".into(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            max_payload_entries: 1024,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ReplicationError::Refused(format!("raft config: {e}")))?;
        let raft = openraft::Raft::new(
            u64::from(node_id),
            Arc::new(config),
            network::Network {
                link,
                peers: members.clone(),
            },
            log.clone(),
            sm,
        )
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
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batcher(raft.clone(), rx, timeout, node_id, members.clone()));
        Ok(Arc::new(RaftNode {
            raft,
            node_id,
            members,
            log,
            proposals: tx,
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
        not_leader(self.node_id, &self.members, leader)
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
    /// its entry and it is applied here. Concurrent proposals share entries.
    pub async fn propose(&self, topic: &str, msg: Msg) -> Result<Appended, ProposeError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let p = Proposal {
            topic: topic.to_string(),
            msg,
            reply,
        };
        if self.proposals.send(p).is_err() {
            return Err(ProposeError::Raft("the proposer stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(ProposeError::Raft("proposal dropped".into())))
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

fn not_leader(me: u16, members: &BTreeMap<u16, String>, leader: Option<u64>) -> ProposeError {
    let hint = leader
        .and_then(|l| u16::try_from(l).ok())
        .filter(|l| *l != me)
        .map(|l| {
            format!(
                "; the leader is node {l} at {}",
                members.get(&l).map_or("?", String::as_str)
            )
        })
        .unwrap_or_else(|| "; no leader is elected right now".into());
    ProposeError::NotLeader { me, hint }
}

/// Coalesces queued proposals into entries: takes what is waiting (up to
/// the entry limits), hands it to Raft in order, and answers each message
/// when its entry is applied — or fails them all on a timeout or error.
/// Up to [`MAX_IN_FLIGHT_ENTRIES`] entries are outstanding at once; while
/// they are, new proposals pile up and make the next entry bigger.
async fn batcher(
    raft: openraft::Raft<TypeConfig>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Proposal>,
    timeout: Duration,
    me: u16,
    members: BTreeMap<u16, String>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_ENTRIES));
    while let Some(first) = rx.recv().await {
        let mut bytes = first.msg.body.len();
        let mut batch = vec![first];
        while batch.len() < MAX_ENTRY_MSGS && bytes < MAX_ENTRY_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.msg.body.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (replies, msgs): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.reply, (p.topic, p.msg))).unzip();
        let req = Request {
            stored_ms: crate::time::now_ms(),
            msgs,
        };
        // Enqueued here, in order; answered in a task of its own.
        let pending = raft.client_write_ff(req).await;
        let members = members.clone();
        tokio::spawn(async move {
            let answer: Result<Vec<Appended>, ProposeError> = match pending {
                Err(e) => Err(ProposeError::Raft(e.to_string())),
                Ok(rx) => match tokio::time::timeout(timeout, rx).await {
                    Err(_) => Err(ProposeError::Timeout(timeout)),
                    Ok(Err(_)) => Err(ProposeError::Raft("raft stopped".into())),
                    Ok(Ok(Ok(resp))) => Ok(resp.data.placed),
                    Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => Err(not_leader(me, &members, f.leader_id)),
                    Ok(Ok(Err(e))) => Err(ProposeError::Raft(e.to_string())),
                },
            };
            drop(slot);
            match answer {
                Ok(placed) if placed.len() == replies.len() => {
                    for (reply, p) in replies.into_iter().zip(placed) {
                        let _ = reply.send(Ok(p));
                    }
                }
                Ok(placed) => {
                    for reply in replies {
                        let _ = reply.send(Err(ProposeError::Raft(format!(
                            "entry applied with {} placements",
                            placed.len()
                        ))));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// A malformed RPC: logged, answered as a fatal error to the caller.
fn fatal<E>(e: serde_json::Error) -> RaftError<u64, E> {
    tracing::warn!(error = %e, "malformed raft RPC");
    RaftError::Fatal(openraft::error::Fatal::Panicked)
}
