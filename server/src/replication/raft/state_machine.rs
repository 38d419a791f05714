//! The Raft state machine: committed entries become records of the node's
//! commit log, identical on every member.
//!
//! Each message of an entry is appended with [`Store::append_as`] as
//! written by the entry's leader (node = leader id, epoch = term, stored
//! time from the leader), so every member appends the same frames at the
//! same positions and a message id is the same everywhere. Every record
//! carries `RAFT_ENTRY = index:seq:count`; blank and membership entries are
//! recorded too (topic `%RAFT%`). So the last record of the log tells how
//! far the log was applied: after a restart nothing is applied twice, an
//! entry cut short by a crash is completed (its first `seq + 1` messages
//! are skipped when it is applied again), and what a power loss took from
//! the commit log is applied again from the Raft log. Membership is also
//! kept in `raft.membership`, written once its record is durable.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};

use super::log_store::LogStore;
use super::{Response, TypeConfig, PROP_RAFT_ENTRY, RAFT_TOPIC};
use crate::broker::Applied;
use crate::storage::{AppendAs, NewMessage, Store, StoredMessage};

type NodeId = u64;

pub struct StateMachine {
    store: Arc<Store>,
    /// Told of every applied entry's system records (committed offsets,
    /// replays), so consumer state follows the log; apply stays synchronous.
    applied: Arc<dyn Applied>,
    membership_path: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    /// An entry a crash cut short: `(index, messages already in the log)`.
    partial: Option<(u64, usize)>,
    /// This member's Raft log: an entry is applied only once it is durable there.
    log: LogStore,
}

/// How often a member applying a committed entry to a full disk looks again.
const SPACE_RETRY: Duration = Duration::from_millis(100);

/// Waits while the commit log's free-space gate refuses `bytes`: a
/// committed entry must be applied, and a full disk is over once space
/// returns (failing here would shut this member's Raft down for good).
async fn wait_for_space(store: &Store, bytes: u64) -> Result<(), crate::storage::StorageError> {
    let mut warned = false;
    loop {
        match store.admit_space(bytes) {
            Err(crate::storage::StorageError::NoSpace { .. }) => {
                if !warned {
                    tracing::warn!("raft: the disk is full; applying committed entries waits until space returns");
                    warned = true;
                }
                tokio::time::sleep(SPACE_RETRY).await;
            }
            other => return other,
        }
    }
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

/// `(index, seq, count)` from a record's `RAFT_ENTRY`.
fn entry_of(m: &StoredMessage) -> Option<(u64, usize, usize)> {
    let mut it = m.properties.get(PROP_RAFT_ENTRY)?.split(':');
    let index = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let count = it.next()?.parse().ok()?;
    Some((index, seq, count))
}

impl StateMachine {
    /// Recovers the applied state from the commit log's last record (and
    /// the Raft log for the log id before an entry cut short).
    pub async fn open(
        store: Arc<Store>,
        dir: &std::path::Path,
        log: &LogStore,
        applied: Arc<dyn Applied>,
    ) -> std::io::Result<StateMachine> {
        let membership_path = dir.join("raft.membership");
        let membership = match std::fs::read(&membership_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredMembership::default(),
            Err(e) => return Err(e),
        };
        let mut partial = None;
        let mut last_applied = None;
        if let Some((index, seq, count)) = store.last_record().and_then(|(_, m)| entry_of(&m)) {
            let complete = if seq + 1 >= count {
                Some(index)
            } else {
                tracing::warn!(
                    index,
                    done = seq + 1,
                    count,
                    "raft entry cut short by a crash; completing it"
                );
                partial = Some((index, seq + 1));
                index.checked_sub(1)
            };
            if let Some(i) = complete {
                let mut reader = log.clone();
                let found = reader
                    .try_get_log_entries(i..=i)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                last_applied = found.first().map(|e| e.log_id);
                if last_applied.is_none() {
                    return Err(std::io::Error::other(format!(
                        "commit log applied raft entry {i}, but the raft log does not have it"
                    )));
                }
            }
        }
        Ok(StateMachine {
            store,
            applied,
            membership_path,
            last_applied,
            membership,
            partial,
            log: log.clone(),
        })
    }

    async fn apply_one(&mut self, e: &Entry<TypeConfig>) -> Result<Response, StorageError<NodeId>> {
        let index = e.log_id.index;
        self.log.wait_durable(index).await.map_err(sm_err)?;
        let writer = AppendAs {
            node: u16::try_from(e.log_id.leader_id.node_id).unwrap_or(u16::MAX),
            epoch: u32::try_from(e.log_id.leader_id.term).unwrap_or(u32::MAX),
            stored_ms: match &e.payload {
                EntryPayload::Normal(r) => r.stored_ms,
                _ => 0,
            },
        };
        let system = |body: Vec<u8>| {
            vec![NewMessage {
                topic: RAFT_TOPIC.into(),
                body,
                ..NewMessage::default()
            }]
        };
        let mut membership = None;
        let msgs: Vec<NewMessage> = match &e.payload {
            EntryPayload::Normal(r) => r
                .msgs
                .iter()
                .map(|(topic, m)| NewMessage {
                    topic: topic.clone(),
                    queue_id: m.queue_id,
                    key: m.key.clone(),
                    tags: m.tags.clone(),
                    producer: m.producer.clone(),
                    properties: m.properties.clone(),
                    body: m.body.clone(),
                    born_ms: m.born_ms,
                })
                .collect(),
            EntryPayload::Blank => system(b"blank".to_vec()),
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(e.log_id), m.clone());
                let body = serde_json::to_vec(&stored).map_err(sm_err)?;
                membership = Some(stored);
                system(body)
            }
        };
        let count = msgs.len();
        let skip = match self.partial {
            Some((i, done)) if i == index => done,
            _ => 0,
        };
        self.partial = None;
        let mut placed = Vec::with_capacity(count);
        let mut applied_system = Vec::new();
        let mut last_end = 0;
        // One free-space check per entry (append_as checks each message too).
        let bytes: u64 = msgs.iter().skip(skip).map(|m| m.body.len() as u64).sum();
        wait_for_space(&self.store, bytes).await.map_err(sm_err)?;
        for (seq, mut msg) in msgs.into_iter().enumerate() {
            if seq < skip {
                continue;
            }
            msg.properties
                .insert(PROP_RAFT_ENTRY.into(), format!("{index}:{seq}:{count}"));
            if msg.topic.starts_with('%') && msg.topic != RAFT_TOPIC {
                applied_system.push(StoredMessage {
                    node: writer.node,
                    epoch: writer.epoch,
                    born_ms: msg.born_ms,
                    stored_ms: writer.stored_ms,
                    topic: msg.topic.clone(),
                    queue_id: msg.queue_id,
                    key: msg.key.clone(),
                    body: msg.body.clone(),
                    ..StoredMessage::default()
                });
            }
            let a = self.store.append_as(msg, Some(writer)).map_err(sm_err)?;
            last_end = a.end;
            placed.push(a);
        }
        if let Some(stored) = membership {
            // Never ahead of the record it describes.
            let _ = self.store.wait_flushed(last_end, Duration::from_secs(5)).await;
            self.membership = stored;
            let bytes = serde_json::to_vec(&self.membership).map_err(sm_err)?;
            super::log_store::write_atomic(&self.membership_path, &bytes).map_err(sm_err)?;
        }
        self.last_applied = Some(e.log_id);
        self.applied.applied(&applied_system);
        Ok(Response { placed })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;
    use crate::replication::raft::{log_store, Msg, Request};
    use crate::storage::fs::RealFs;
    use crate::storage::{Flush, StoreOptions};

    fn entry(index: u64, bodies: &[&str]) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Normal(Request {
                stored_ms: 1_700_000_000_000 + index as i64,
                msgs: bodies
                    .iter()
                    .map(|b| {
                        (
                            "t".to_string(),
                            Msg {
                                queue_id: 0,
                                key: Some(format!("k-{b}")),
                                tags: None,
                                producer: None,
                                properties: BTreeMap::new(),
                                body: b.as_bytes().to_vec(),
                                born_ms: 1,
                            },
                        )
                    })
                    .collect(),
            }),
        }
    }

    fn store(dir: &std::path::Path, node: u16) -> Arc<Store> {
        let mut o = StoreOptions::new(dir.join("data"), Flush::Sync);
        o.node_id = node;
        Arc::new(Store::open(Arc::new(RealFs), o).unwrap())
    }

    /// These tests look at the commit log only.
    struct NoConsumers;

    impl crate::broker::Applied for NoConsumers {
        fn applied(&self, _system: &[StoredMessage]) {}
    }

    fn log_bytes(dir: &std::path::Path) -> Vec<u8> {
        let mut names: Vec<_> = std::fs::read_dir(dir.join("data/log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names.iter().flat_map(|n| std::fs::read(n).unwrap()).collect()
    }

    /// Same entries → byte-identical commit logs on two members, and an
    /// entry a crash cut short is completed, not applied twice.
    #[tokio::test]
    async fn an_entry_cut_short_is_completed_and_logs_stay_identical() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let entries = [entry(1, &["x"]), entry(2, &["a", "b", "c"])];
        // The Raft log both members hold.
        for d in [a.path(), b.path()] {
            std::fs::create_dir_all(d.join("raft")).unwrap();
            let bytes: Vec<u8> = entries.iter().flat_map(|e| log_store::frame(e).unwrap()).collect();
            std::fs::write(d.join("raft/raft.log"), bytes).unwrap();
        }
        // Member A (node 1) applies both entries whole.
        let sa = store(a.path(), 1);
        let la = LogStore::open(Arc::new(RealFs), &a.path().join("raft"), true, Duration::from_secs(1)).unwrap();
        let mut ma = StateMachine::open(sa.clone(), &a.path().join("raft"), &la, Arc::new(NoConsumers))
            .await
            .unwrap();
        assert_eq!(ma.last_applied, None);
        for e in &entries {
            ma.apply_one(e).await.unwrap();
        }
        sa.close();

        // Member B (node 3) crashed after the first message of entry 2.
        let sb = store(b.path(), 3);
        let lb = LogStore::open(Arc::new(RealFs), &b.path().join("raft"), true, Duration::from_secs(1)).unwrap();
        let mut mb = StateMachine::open(sb.clone(), &b.path().join("raft"), &lb, Arc::new(NoConsumers))
            .await
            .unwrap();
        mb.apply_one(&entries[0]).await.unwrap();
        let EntryPayload::Normal(r) = &entries[1].payload else {
            unreachable!()
        };
        let (topic, m) = &r.msgs[0];
        let mut properties = m.properties.clone();
        properties.insert(PROP_RAFT_ENTRY.into(), "2:0:3".into());
        let writer = AppendAs {
            node: 1,
            epoch: 2,
            stored_ms: r.stored_ms,
        };
        let first = NewMessage {
            topic: topic.clone(),
            queue_id: 0,
            key: m.key.clone(),
            properties,
            body: m.body.clone(),
            born_ms: m.born_ms,
            ..NewMessage::default()
        };
        sb.append_as(first, Some(writer)).unwrap();
        sb.close();
        drop((mb, sb));

        // Restart: applied up to entry 1, entry 2 partly; completing it.
        let sb = store(b.path(), 3);
        let mut mb = StateMachine::open(sb.clone(), &b.path().join("raft"), &lb, Arc::new(NoConsumers))
            .await
            .unwrap();
        assert_eq!(mb.last_applied.map(|l| l.index), Some(1));
        assert_eq!(mb.partial, Some((2, 1)));
        let resp = mb.apply_one(&entries[1]).await.unwrap();
        assert_eq!(resp.placed.len(), 2);
        sb.close();
        assert_eq!(log_bytes(a.path()), log_bytes(b.path()));
        // And after another restart it knows entry 2 is done.
        let sb = store(b.path(), 3);
        let mb = StateMachine::open(sb.clone(), &b.path().join("raft"), &lb, Arc::new(NoConsumers))
            .await
            .unwrap();
        assert_eq!(mb.last_applied.map(|l| l.index), Some(2));
        assert_eq!(mb.partial, None);
    }
}
