//! The Raft state machine: committed entries become records of the node's
//! commit log, identical on every member.
//!
//! Each entry is appended with [`Store::append_as`] as written by its
//! leader (node = leader id, epoch = term, stored time from the leader), so
//! every member appends the same frame at the same position and the message
//! id is the same everywhere. Every record carries its entry index
//! (`RAFT_INDEX`); blank and membership entries are recorded too, in the
//! `%RAFT%` system topic. So the last record of the log *is* the last
//! applied entry: after a restart nothing is applied twice, and what a
//! power loss took from the commit log is re-applied from the Raft log.
//! Membership is also kept in `raft.membership` (written once the record
//! is durable).

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};

use super::{Placed, Request, Response, TypeConfig, PROP_RAFT_INDEX, RAFT_TOPIC};
use crate::broker::Broker;
use crate::storage::{AppendAs, NewMessage, Store};

type NodeId = u64;

pub struct StateMachine {
    store: Arc<Store>,
    /// Set after the broker exists: committed consumer state is applied to it.
    pub(crate) broker: Arc<OnceLock<Weak<Broker>>>,
    membership_path: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl StateMachine {
    /// Recovers the applied state from the commit log's last record.
    pub fn open(store: Arc<Store>, dir: &std::path::Path) -> std::io::Result<StateMachine> {
        let membership_path = dir.join("raft.membership");
        let membership = match std::fs::read(&membership_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredMembership::default(),
            Err(e) => return Err(e),
        };
        let last_applied = store.last_record().and_then(|(_, m)| {
            let index = m.properties.get(PROP_RAFT_INDEX)?.parse::<u64>().ok()?;
            Some(LogId::new(
                CommittedLeaderId::new(u64::from(m.epoch), u64::from(m.node)),
                index,
            ))
        });
        Ok(StateMachine {
            store,
            broker: Arc::new(OnceLock::new()),
            membership_path,
            last_applied,
            membership,
        })
    }

    async fn apply_one(&mut self, e: &Entry<TypeConfig>) -> Result<Response, StorageError<NodeId>> {
        let writer = AppendAs {
            node: u16::try_from(e.log_id.leader_id.node_id).unwrap_or(u16::MAX),
            epoch: u32::try_from(e.log_id.leader_id.term).unwrap_or(u32::MAX),
            stored_ms: match &e.payload {
                EntryPayload::Normal(r) => r.stored_ms,
                _ => 0,
            },
        };
        let index = e.log_id.index.to_string();
        let (msg, membership) = match &e.payload {
            EntryPayload::Normal(Request { topic, msg, .. }) => {
                let mut properties = msg.properties.clone();
                properties.insert(PROP_RAFT_INDEX.into(), index);
                (
                    NewMessage {
                        topic: topic.clone(),
                        queue_id: msg.queue_id,
                        key: msg.key.clone(),
                        tags: msg.tags.clone(),
                        producer: msg.producer.clone(),
                        properties,
                        body: msg.body.clone(),
                        born_ms: msg.born_ms,
                    },
                    None,
                )
            }
            EntryPayload::Blank => (
                NewMessage {
                    topic: RAFT_TOPIC.into(),
                    properties: [(PROP_RAFT_INDEX.to_string(), index)].into(),
                    body: b"blank".to_vec(),
                    ..NewMessage::default()
                },
                None,
            ),
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(e.log_id), m.clone());
                (
                    NewMessage {
                        topic: RAFT_TOPIC.into(),
                        properties: [(PROP_RAFT_INDEX.to_string(), index)].into(),
                        body: serde_json::to_vec(&stored).map_err(sm_err)?,
                        ..NewMessage::default()
                    },
                    Some(stored),
                )
            }
        };
        let system = (msg.topic.starts_with('%') && msg.topic != RAFT_TOPIC).then(|| crate::storage::StoredMessage {
            node: writer.node,
            epoch: writer.epoch,
            born_ms: msg.born_ms,
            stored_ms: writer.stored_ms,
            topic: msg.topic.clone(),
            queue_id: msg.queue_id,
            queue_offset: 0,
            key: msg.key.clone(),
            tags: None,
            producer: None,
            properties: Default::default(),
            body: msg.body.clone(),
        });
        let a = self.store.append_as(msg, Some(writer)).map_err(sm_err)?;
        if let Some(stored) = membership {
            // Never ahead of the record it describes.
            let _ = self.store.wait_flushed(a.end, Duration::from_secs(5)).await;
            self.membership = stored;
            let bytes = serde_json::to_vec(&self.membership).map_err(sm_err)?;
            super::log_store::write_atomic(&self.membership_path, &bytes).map_err(sm_err)?;
        }
        self.last_applied = Some(e.log_id);
        if let (Some(m), Some(b)) = (system, self.broker.get().and_then(Weak::upgrade)) {
            b.apply_replicated(&[m]);
        }
        Ok(Response {
            placed: Some(Placed {
                pos: a.pos,
                end: a.end,
                queue_offset: a.queue_offset,
                node: a.node,
                epoch: a.epoch,
                stored_ms: a.stored_ms,
            }),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            out.push(self.apply_one(&e).await?);
        }
        if let Some(b) = self.broker.get().and_then(Weak::upgrade) {
            // Wakes long-polling consumers on every member.
            b.apply_replicated(&[]);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Err(no_snapshots())
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        Err(no_snapshots())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(None)
    }
}

fn no_snapshots() -> StorageError<NodeId> {
    StorageIOError::read_snapshot(
        None,
        &std::io::Error::other("snapshots are off: the Raft log is kept whole and replayed instead"),
    )
    .into()
}

/// Snapshots are off (`SnapshotPolicy::Never`, logs never purged), so a
/// lagging member always catches up from the log itself.
pub struct NoSnapshots;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        Err(no_snapshots())
    }
}
