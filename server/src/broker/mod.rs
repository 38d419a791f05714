//! The broker: turns producer sends into stored messages with a SendStatus.
//!
//! It validates what the outside world hands in (topic names, sizes),
//! picks a queue, appends through the storage engine and — in sync flush
//! mode — waits for the group commit that covers the message before
//! answering `SEND_OK`, or answers `FLUSH_DISK_TIMEOUT` when the fsync does
//! not come within `sync_flush_timeout`.
//!
//! # Layout
//! - `produce`: the produce path (place, durability, answer).
//! - [`event`]: the events the broker emits to its observers.
//! - [`error`]: `BrokerError` and its one HTTP/wire answer table.
//! - `id` (re-exported from `crate::model`): message ids that locate the
//!   message in the log.
//! - [`topic`]: topic and group name rules, reserved property names.
//! - [`groups`]: consumer group membership, assignment, committed offsets.
//! - [`pull`]: reading queues for consumers (long polling, due retries).
//! - [`retry`]: delay levels, retry and dead-letter records.
//! - [`dlq`]: listing and replaying dead letters.
//! - [`transaction`]: half messages, commit/rollback, check-back.
//! - [`counts`]: produce answers per topic, for `/metrics`.
//! - [`listener`]: the client protocol endpoint (TCP, pipelined frames).
//! - [`traced`]: a send's evidence for the tracer, and what a shed one costs.

pub mod counts;
pub mod dlq;
pub mod error;
pub mod event;
pub mod groups;
pub mod listener;
mod produce;
pub mod pull;
pub mod retry;
#[cfg(test)]
mod timer_tests;
pub mod topic;
mod traced;
pub mod transaction;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use crate::model::id::{self, BadId, MessageId};
use crate::storage::{self, FlushOutcome, NewMessage, StorageError, Store, StoredMessage};
use crate::time::now_ms;
use crate::trace::Tracer;
pub use error::{Answer, BrokerError};
use event::TraceEvent;
pub use topic::TopicError;
pub use waybill_client::SendStatus;

/// Broker tunables.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// RocketMQ's `syncFlushTimeout`: how long a sync-flush send waits for
    /// its fsync before answering `FLUSH_DISK_TIMEOUT` (default 5 s).
    pub sync_flush_timeout: Duration,
    /// Queues per topic (RocketMQ's default is 4).
    pub queues_per_topic: u32,
    pub retry: retry::RetryPolicy,
    /// A consumer silent this long leaves its group (RocketMQ: 120 s).
    pub client_timeout: Duration,
    /// A dead letter whose message reached the DLQ more than this many
    /// times is quarantined instead of replayed (no replay loops).
    pub replay_guard: u32,
    /// Transaction check-back timing.
    pub transactions: transaction::TxOptions,
    /// "Now" for retry due times, the pulls waiting on them and
    /// transaction check-backs: the system clock, or tokio's in tests that
    /// pause time.
    pub clock: crate::time::Clock,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            sync_flush_timeout: Duration::from_secs(5),
            queues_per_topic: 4,
            retry: retry::RetryPolicy::default(),
            client_timeout: Duration::from_secs(30),
            replay_guard: 3,
            transactions: transaction::TxOptions::default(),
            clock: crate::time::Clock::system(),
        }
    }
}

/// A message as a producer sends it.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub topic: String,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub producer: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Producer-side creation time; the broker's clock when absent.
    pub born_ms: Option<i64>,
    /// How the producer sent it (`sync`, `async`, `oneway`), for the trace;
    /// `sync` when absent.
    pub send_mode: Option<&'static str>,
}

impl Outgoing {
    /// A system copy of a stored message (retry, dead letter, replay) for
    /// `topic`, with new properties; key, tags, producer, body and birth
    /// time carry over.
    pub fn copy_of(m: StoredMessage, topic: &str, properties: BTreeMap<String, String>) -> Outgoing {
        Outgoing {
            topic: topic.to_string(),
            key: m.key,
            tags: m.tags,
            producer: m.producer,
            properties,
            body: m.body,
            born_ms: Some(m.born_ms),
            send_mode: None,
        }
    }
}

/// Where an appended message landed (internal).
#[derive(Debug, Clone, Copy)]
struct Placed {
    queue_id: u32,
    queue_offset: u64,
    pos: u64,
    end: u64,
    born_ms: i64,
    stored_ms: i64,
}

/// What a send returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    pub id: MessageId,
    pub status: SendStatus,
    pub queue_id: u32,
    pub queue_offset: u64,
}

/// Live events buffered per listener before it lags.
const LIVE_CAPACITY: usize = 1024;

/// Longest key string accepted (the record stores it with a u16 length).
pub const MAX_KEY_LEN: usize = 4096;

pub struct Broker {
    store: Arc<Store>,
    opts: BrokerOptions,
    /// Round-robin cursor for messages without a key.
    next_queue: AtomicU32,
    /// Woken after every stored message: long-polling pulls wait on it.
    appended: Notify,
    groups: groups::Groups,
    replays: dlq::Replays,
    transactions: transaction::Transactions,
    /// Messages stored by produce requests, by topic and answer.
    produced: counts::Produced,
    /// Set once at start when tracing is on; never blocks the broker.
    tracer: std::sync::OnceLock<Arc<Tracer>>,
    /// Live feed for the dashboard (`/api/v1/events`): a summary of every
    /// traced event, sent only while someone listens; a slow listener
    /// misses events (broadcast lag), the broker never waits.
    live: tokio::sync::broadcast::Sender<serde_json::Value>,
    /// Times (ms) of recent dead-letterings per group, for the DLQ-inflow
    /// alert; pruned to the last minute. std Mutex: push/prune only.
    dlq_moves: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<i64>>>,
    alerts: std::sync::OnceLock<Arc<crate::trace::alerts::Alerts>>,
    /// Set once at start when `--otlp-endpoint` is given.
    otel: std::sync::OnceLock<Arc<crate::trace::otel::Otel>>,
    /// This node's replication group (set once at start).
    cluster: std::sync::OnceLock<Arc<crate::replication::Cluster>>,
    /// Raft mode: this member of the group (set once at start).
    raft: std::sync::OnceLock<Arc<crate::replication::raft::RaftNode>>,
}

impl Broker {
    /// Builds the broker over an opened store, restoring committed offsets
    /// and replay records from their system topics.
    pub fn new(store: Arc<Store>, opts: BrokerOptions) -> Result<Self, BrokerError> {
        let broker = Broker {
            groups: groups::Groups::new(opts.client_timeout),
            store,
            opts,
            next_queue: AtomicU32::new(0),
            appended: Notify::new(),
            replays: dlq::Replays::default(),
            transactions: transaction::Transactions::default(),
            produced: counts::Produced::default(),
            tracer: std::sync::OnceLock::new(),
            live: tokio::sync::broadcast::channel(LIVE_CAPACITY).0,
            dlq_moves: std::sync::Mutex::new(std::collections::HashMap::new()),
            alerts: std::sync::OnceLock::new(),
            otel: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            raft: std::sync::OnceLock::new(),
        };
        broker.restore()?;
        Ok(broker)
    }

    fn restore(&self) -> Result<(), BrokerError> {
        let mut offsets = 0;
        self.scan_system(groups::OFFSETS_TOPIC, |m| {
            let key = m.key.as_deref().unwrap_or_default();
            if let Some((g, t, q, o)) = groups::parse_offset_record(key, &m.body) {
                self.groups.set_offset(&g, &t, q, o);
                offsets += 1;
            }
        })?;
        let mut replays = 0;
        self.scan_system(dlq::REPLAYS_TOPIC, |m| {
            if self.replays.load(&m.body) {
                replays += 1;
            }
        })?;
        tracing::info!(offsets, replays, "consumer state restored");
        Ok(())
    }

    /// Calls `f` on every record of a system topic's queue 0, in order.
    fn scan_system(&self, topic: &str, mut f: impl FnMut(&StoredMessage)) -> Result<(), BrokerError> {
        Ok(self.store.scan_queue(topic, 0, |_, _, m| f(&m))?)
    }

    /// Turns tracing on (once).
    pub fn set_tracer(&self, tracer: Arc<Tracer>) {
        let _ = self.tracer.set(tracer);
    }

    pub fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.tracer.get()
    }

    /// Hands an event to the tracer, if tracing is on.
    fn trace(&self, ev: impl FnOnce() -> TraceEvent) {
        if let Some(t) = self.tracer.get() {
            let ev = ev();
            self.publish(&ev);
            let _ = t.record(ev);
        }
    }

    /// Sends a summary of `ev` to live listeners, if any.
    fn publish(&self, ev: &TraceEvent) {
        if self.live.receiver_count() > 0 {
            for v in crate::trace::live::summaries(ev) {
                let _ = self.live.send(v);
            }
        }
    }

    /// Records a dead-lettering for the DLQ-inflow alert.
    pub(crate) fn note_dead_letter(&self, group: &str) {
        let now = now_ms();
        let mut moves = self.dlq_moves.lock().unwrap_or_else(|p| p.into_inner());
        let q = moves.entry(group.to_string()).or_default();
        q.push_back(now);
        while q.front().is_some_and(|t| now - *t > 60_000) {
            q.pop_front();
        }
    }

    /// Dead-letterings per group in the last minute.
    pub fn dlq_inflow(&self) -> Vec<(String, u64)> {
        let now = now_ms();
        let moves = self.dlq_moves.lock().unwrap_or_else(|p| p.into_inner());
        moves
            .iter()
            .map(|(g, q)| (g.clone(), q.iter().filter(|t| now - **t <= 60_000).count() as u64))
            .collect()
    }

    /// Joins a replication group (once).
    pub fn set_cluster(&self, cluster: Arc<crate::replication::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Arc<crate::replication::Cluster>> {
        self.cluster.get()
    }

    /// Joins a Raft group (once).
    pub fn set_raft(&self, raft: Arc<crate::replication::raft::RaftNode>) {
        let _ = self.raft.set(raft);
    }

    pub fn raft(&self) -> Option<&Arc<crate::replication::raft::RaftNode>> {
        self.raft.get()
    }

    /// Whether this node may append: only a primary (Raft: the leader)
    /// does, or a node outside any replication group.
    fn check_writable(&self) -> Result<(), BrokerError> {
        if let Some(r) = self.raft.get() {
            return r.check_leader().map_err(|e| BrokerError::NotPrimary(e.to_string()));
        }
        // Outside a replication group every node writes: no lock per append.
        let Some(c) = self.cluster.get().filter(|c| c.mode != crate::replication::Mode::None) else {
            return Ok(());
        };
        match c.role() {
            crate::replication::Role::Primary => Ok(()),
            role => {
                let hint = match c.primary().filter(|p| *p != c.node_id) {
                    Some(p) => format!(
                        "; the primary is node {p} at {}",
                        c.peers.get(&p).map_or("?", String::as_str)
                    ),
                    None => String::new(),
                };
                Err(BrokerError::NotPrimary(format!(
                    "node {} is a {} and does not accept writes{hint}",
                    c.node_id,
                    role.name()
                )))
            }
        }
    }

    /// The replication mode name for the trace.
    fn replication_name(&self) -> &'static str {
        if self.raft.get().is_some() {
            return "raft";
        }
        self.cluster.get().map_or("none", |c| c.mode.name())
    }

    /// Applies system records that arrived by replication: committed
    /// offsets and replay records, so a promoted replica has them.
    pub fn apply_replicated(&self, system: &[StoredMessage]) {
        for m in system {
            if m.topic == groups::OFFSETS_TOPIC {
                let key = m.key.as_deref().unwrap_or_default();
                if let Some((g, t, q, o)) = groups::parse_offset_record(key, &m.body) {
                    self.groups.set_offset(&g, &t, q, o);
                }
            } else if m.topic == dlq::REPLAYS_TOPIC {
                self.replays.load(&m.body);
            }
        }
        self.appended.notify_waiters();
    }

    /// Turns OpenTelemetry export on (once).
    pub fn set_otel(&self, otel: Arc<crate::trace::otel::Otel>) {
        let _ = self.otel.set(otel);
    }

    pub fn otel(&self) -> Option<&Arc<crate::trace::otel::Otel>> {
        self.otel.get()
    }

    pub fn set_alerts(&self, alerts: Arc<crate::trace::alerts::Alerts>) {
        let _ = self.alerts.set(alerts);
    }

    pub fn alerts(&self) -> Option<&Arc<crate::trace::alerts::Alerts>> {
        self.alerts.get()
    }

    /// Subscribes to the live event feed.
    pub fn live(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.live.subscribe()
    }

    pub fn options(&self) -> &BrokerOptions {
        &self.opts
    }

    pub fn groups(&self) -> &groups::Groups {
        &self.groups
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Commits a consumer group's offset for a queue; `handled` lists the
    /// messages the consumer's handler finished, with its time, for the
    /// trace.
    pub fn commit(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        handled: Vec<(u64, u32)>,
    ) -> Result<(), BrokerError> {
        topic::validate_group(group)?;
        self.groups.set_offset(group, topic, queue_id, offset);
        if let Some(o) = self.otel.get() {
            o.committed(group, topic, queue_id, offset, now_ms());
        }
        self.trace(|| TraceEvent::Committed {
            group: group.to_string(),
            topic: topic.to_string(),
            queue_id,
            offset,
            at_ms: now_ms(),
            auto_commit: self.groups.auto_commit(group),
            handled,
        });
        if self.check_writable().is_err() {
            // A replica serving reads while the primary is away keeps the
            // offset in memory; its log must stay a copy of the primary's.
            return Ok(());
        }
        let record = Outgoing {
            key: Some(groups::offset_key(group, topic, queue_id)),
            body: offset.to_string().into_bytes(),
            ..Outgoing::default()
        };
        if let Some(raft) = self.raft.get() {
            // Through the Raft log like every record; not waited for.
            let raft = raft.clone();
            let m = crate::replication::raft::Msg {
                queue_id: 0,
                key: record.key,
                tags: None,
                producer: None,
                properties: BTreeMap::new(),
                body: record.body,
                born_ms: now_ms(),
            };
            tokio::spawn(async move {
                if let Err(e) = raft.propose(groups::OFFSETS_TOPIC, m).await {
                    tracing::warn!(error = %e, "offset commit not replicated");
                }
            });
            return Ok(());
        }
        // Not waited for: a lost commit means a redelivery, never a loss.
        self.append(groups::OFFSETS_TOPIC, 0, record)?;
        Ok(())
    }

    /// All queues a group's members share: the topic's and the group's
    /// retry queues.
    pub fn group_queues(&self, group: &str, topic: &str) -> Vec<(String, u32)> {
        let mut q: Vec<(String, u32)> = (0..self.opts.queues_per_topic)
            .map(|i| (topic.to_string(), i))
            .collect();
        let retry = retry::retry_topic(group);
        q.extend((0..self.opts.retry.retry_queues()).map(|i| (retry.clone(), i)));
        q
    }

    /// The stored message with this id; `Ok(None)` when there is none.
    /// A corrupt record is an error, never returned as data.
    pub fn get(&self, id: &MessageId) -> Result<Option<StoredMessage>, BrokerError> {
        match self.store.read(id.pos) {
            Ok(m) if m.node == id.node && m.epoch == id.epoch => Ok(Some(m)),
            Ok(_) | Err(StorageError::NoRecord { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Messages with this key, newest first.
    pub fn find_by_key(&self, key: &str, limit: usize) -> Vec<(MessageId, StoredMessage)> {
        self.store
            .find_by_key(key, limit)
            .into_iter()
            .map(|(pos, m)| {
                (
                    MessageId {
                        node: m.node,
                        epoch: m.epoch,
                        pos,
                    },
                    m,
                )
            })
            .collect()
    }
}
