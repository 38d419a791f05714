//! The broker: turns producer sends into stored messages with a SendStatus.
//!
//! It validates what the outside world hands in (topic names, sizes),
//! picks a queue, appends through the storage engine and — in sync flush
//! mode — waits for the group commit that covers the message before
//! answering `SEND_OK`, or answers `FLUSH_DISK_TIMEOUT` when the fsync does
//! not come within `sync_flush_timeout`.
//!
//! The client protocol endpoint is `crate::port`, above replication: the
//! broker is what it calls, not where it lives.
//!
//! # Layout
//! - `produce`: the produce path (place, durability, answer).
//! - [`event`]: the events the broker emits to its observers.
//! - [`sink`]: the `Events` trait those observers implement (wired in
//!   `server.rs`); the broker never names the tracer, OTel or alerts.
//! - [`replicas`]: what the produce path needs from replication (one enum,
//!   a narrow trait per mode); the broker never names replication's types.
//! - [`consumers`]: groups, offsets and replays in memory, restored from
//!   system topics; replication applies to it through `Applied`.
//! - [`error`]: `BrokerError` and its one HTTP/wire answer table.
//! - `id` (re-exported from `crate::model`): message ids that locate the
//!   message in the log.
//! - [`topic`]: topic and group name rules, reserved property names.
//! - [`topics_admin`]: topics operators create and delete (`%TOPICS%`).
//! - [`groups`]: consumer group membership, assignment, committed offsets.
//! - [`offsets`]: operator resets, skips and group deletes.
//! - [`pull`]: reading queues for consumers (long polling, due retries).
//! - [`retry`]: delay levels, retry and dead-letter records.
//! - [`dlq`]: listing and replaying dead letters (each at most once).
//! - [`audit`]: operator actions, recorded durably and listed.
//! - [`discard`]: discarding a dead letter (final, audited).
//! - [`edit`]: changes applied to a replayed copy (the letter stays).
//! - [`replays`]: which letters were replayed or discarded, and the claim
//!   that keeps each from being replayed twice.
//! - [`redrive`]: redrive jobs (filter, rate, progress, cancel, resume).
//! - [`transaction`]: half messages, commit/rollback, check-back.
//! - [`counts`]: produce answers per topic, for `/metrics`.
//! - [`traced`]: a send's evidence for the tracer, and what a shed one costs.

pub mod audit;
pub mod consumers;
pub mod counts;
pub mod discard;
pub mod dlq;
pub mod edit;
pub mod error;
pub mod event;
pub mod groups;
pub mod limits;
pub mod offsets;
mod produce;
pub mod pull;
pub mod rate;
pub mod redrive;
pub mod replays;
pub mod replicas;
pub mod retry;
pub mod sink;
#[cfg(test)]
mod timer_tests;
pub mod topic;
pub mod topics_admin;
mod traced;
pub mod transaction;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::model::id::{self, BadId, MessageId};
use crate::storage::{self, FlushOutcome, NewMessage, StorageError, Store, StoredMessage};
use crate::time::now_ms;
pub use consumers::{Applied, Consumers};
pub use error::{Answer, BrokerError};
use event::TraceEvent;
pub use replicas::Replicas;
pub use sink::{Events, Interest, NoEvents};
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
    /// Largest body a producer may send (`max_message_bytes`).
    pub max_message_bytes: usize,
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
            max_message_bytes: limits::DEFAULT_MAX_MESSAGE_BYTES,
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

impl Outgoing {
    /// The message as the store appends it to `topic`'s queue `queue_id`.
    fn into_new(self, topic: &str, queue_id: u32, born_ms: i64) -> NewMessage {
        NewMessage {
            topic: topic.to_string(),
            queue_id,
            key: self.key,
            tags: self.tags,
            producer: self.producer,
            properties: self.properties,
            body: self.body,
            born_ms,
        }
    }
}

/// Where a message landed (the store's placement, appended here or
/// applied by Raft) with the two things the broker chose: its queue and
/// its birth time.
#[derive(Debug, Clone, Copy)]
struct Placed {
    at: storage::Appended,
    queue_id: u32,
    born_ms: i64,
}

/// What a send returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    pub id: MessageId,
    pub status: SendStatus,
    pub queue_id: u32,
    pub queue_offset: u64,
}

/// Longest key string accepted (the record stores it with a u16 length).
pub const MAX_KEY_LEN: usize = 4096;

/// What a broker is wired to. The default is a lone node without
/// observers: what tests and tools that only need a store get.
#[derive(Default)]
pub struct Wiring {
    /// Where events go (`server.rs`: the tracer, OTel, live feed, alerts).
    pub events: Option<Arc<dyn Events>>,
    /// How stored messages are replicated.
    pub replicas: Replicas,
    /// Consumer state restored before the broker exists (Raft and
    /// replication apply to it); restored from the store when absent.
    pub consumers: Option<Arc<Consumers>>,
}

impl Wiring {
    /// Just an event sink: a lone node with observers.
    pub fn events(events: Arc<dyn Events>) -> Wiring {
        Wiring {
            events: Some(events),
            ..Wiring::default()
        }
    }
}

pub struct Broker {
    store: Arc<Store>,
    opts: BrokerOptions,
    /// Round-robin cursor for messages without a key.
    next_queue: AtomicU32,
    /// Groups, offsets, replays, and the long-poll wake-up (shared with
    /// replication, which applies replicated system records to it).
    consumers: Arc<Consumers>,
    transactions: transaction::Transactions,
    /// Messages stored by produce requests, by topic and answer.
    produced: counts::Produced,
    /// Requests refused over a limit, by reason (for `/metrics`; the
    /// fronts add their rate-limit refusals here too).
    refusals: limits::Refusals,
    /// The observers' sink; never blocks the broker.
    events: Arc<dyn Events>,
    /// What the sink wants built (asked once: two booleans on the hot path).
    interest: Interest,
    /// How stored messages are replicated (fixed for the node's life).
    replicas: Replicas,
}

impl Broker {
    /// Builds a lone broker over an opened store, restoring committed
    /// offsets and replay records from their system topics.
    pub fn new(store: Arc<Store>, opts: BrokerOptions) -> Result<Self, BrokerError> {
        Self::wired(store, opts, Wiring::default())
    }

    /// Builds the broker with its observers and replication.
    pub fn wired(store: Arc<Store>, opts: BrokerOptions, wiring: Wiring) -> Result<Self, BrokerError> {
        let consumers = match wiring.consumers {
            Some(c) => c,
            None => Arc::new(Consumers::restore(
                &store,
                opts.client_timeout,
                opts.retry.replay_queue(),
            )?),
        };
        let events = wiring.events.unwrap_or_else(|| Arc::new(NoEvents));
        Ok(Broker {
            interest: events.interest(),
            events,
            replicas: wiring.replicas,
            consumers,
            store,
            opts,
            next_queue: AtomicU32::new(0),
            transactions: transaction::Transactions::default(),
            produced: counts::Produced::default(),
            refusals: limits::Refusals::default(),
        })
    }

    /// Hands a message event to the sink, if a tracer wants them (the
    /// event is built only then).
    fn trace(&self, ev: impl FnOnce() -> TraceEvent) {
        if self.interest.trace {
            self.events.event(ev());
        }
    }

    /// Whether this node may append: only a primary (Raft: the leader)
    /// does, or a node outside any replication group.
    fn check_writable(&self) -> Result<(), BrokerError> {
        self.replicas.writable().map_err(BrokerError::NotPrimary)
    }

    /// Refusals over a limit, by reason.
    pub fn refusals(&self) -> &limits::Refusals {
        &self.refusals
    }

    /// Checks producer messages against the limits, counting a refusal.
    fn check_limits<'a>(&self, msgs: impl IntoIterator<Item = &'a Outgoing>) -> Result<(), BrokerError> {
        for m in msgs {
            if let Err(e) = limits::check(m, self.opts.max_message_bytes) {
                self.refusals.add(e.reason());
                return Err(e.into());
            }
        }
        Ok(())
    }

    pub fn options(&self) -> &BrokerOptions {
        &self.opts
    }

    pub fn groups(&self) -> &groups::Groups {
        &self.consumers.groups
    }

    /// The consumer state (shared with replication and alerts).
    pub fn consumers(&self) -> &Arc<Consumers> {
        &self.consumers
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
        duplicates: Vec<(u64, String)>,
    ) -> Result<(), BrokerError> {
        topic::validate_group(group)?;
        if !self.consumers.groups.commit_offset(group, topic, queue_id, offset) {
            // An operator reset the queue since this member last pulled:
            // its position is the old one (see `offsets.rs`).
            tracing::debug!(group, topic, queue_id, offset, "commit dropped: the queue was reset");
            return Ok(());
        }
        self.consumers.groups.suppressed(group, duplicates.len() as u64);
        // OTel ends the message's spans at the commit even without a tracer.
        if self.interest.trace || self.interest.spans {
            self.events.event(TraceEvent::Committed {
                group: group.to_string(),
                topic: topic.to_string(),
                queue_id,
                offset,
                at_ms: now_ms(),
                auto_commit: self.consumers.groups.auto_commit(group),
                dedupe_window_ms: self.consumers.groups.dedupe(group).map(|d| d.window_ms),
                handled,
                duplicates,
            });
        }
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
        if let Replicas::Raft(raft) = &self.replicas {
            // Through the Raft log like every record; not waited for.
            let raft = raft.clone();
            let m = NewMessage {
                topic: groups::OFFSETS_TOPIC.to_string(),
                queue_id: 0,
                key: record.key,
                tags: None,
                producer: None,
                properties: BTreeMap::new(),
                body: record.body,
                born_ms: now_ms(),
            };
            tokio::spawn(async move {
                if let Err(e) = raft.propose(m).await {
                    tracing::warn!(error = %e, "offset commit not replicated");
                }
            });
            return Ok(());
        }
        // Not waited for: a lost commit means a redelivery, never a loss.
        // `append` leaves the flusher asleep; under sync flush wake it (as a
        // plain store append would), under async flush leave the fsync to
        // its interval (waking it would fsync on every commit).
        self.append(groups::OFFSETS_TOPIC, 0, record)?;
        if self.store.flush_mode() == storage::Flush::Sync {
            self.store.flush_soon();
        }
        Ok(())
    }

    /// All queues a group's members share: the topic's and the group's
    /// retry queues.
    pub fn group_queues(&self, group: &str, topic: &str) -> Vec<(String, u32)> {
        let mut q: Vec<(String, u32)> = (0..self.topic_queues(topic)).map(|i| (topic.to_string(), i)).collect();
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
