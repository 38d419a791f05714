//! The broker: turns producer sends into stored messages with a SendStatus.
//!
//! It validates what the outside world hands in (topic names, sizes),
//! picks a queue, appends through the storage engine and — in sync flush
//! mode — waits for the group commit that covers the message before
//! answering `SEND_OK`, or answers `FLUSH_DISK_TIMEOUT` when the fsync does
//! not come within `sync_flush_timeout`.
//!
//! # Layout
//! - [`id`]: message ids that locate the message in the log.
//! - [`topic`]: topic name rules.
//! - [`status`]: `SendStatus` with RocketMQ's names.

pub mod id;
pub mod status;
pub mod topic;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::storage::{self, FlushOutcome, NewMessage, StorageError, Store, StoredMessage};
pub use id::{BadId, MessageId};
pub use status::SendStatus;
pub use topic::TopicError;

/// Broker tunables.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// RocketMQ's `syncFlushTimeout`: how long a sync-flush send waits for
    /// its fsync before answering `FLUSH_DISK_TIMEOUT` (default 5 s).
    pub sync_flush_timeout: Duration,
    /// Queues per topic (RocketMQ's default is 4).
    pub queues_per_topic: u32,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            sync_flush_timeout: Duration::from_secs(5),
            queues_per_topic: 4,
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
}

/// What a send returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    pub id: MessageId,
    pub status: SendStatus,
    pub queue_id: u32,
    pub queue_offset: u64,
}

/// Errors of the broker layer.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    BadId(#[from] BadId),
    #[error("key is longer than {max} bytes")]
    KeyTooLong { max: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Longest key string accepted (the record stores it with a u16 length).
pub const MAX_KEY_LEN: usize = 4096;

pub struct Broker {
    store: Arc<Store>,
    opts: BrokerOptions,
    /// Round-robin cursor for messages without a key.
    next_queue: AtomicU32,
}

impl Broker {
    pub fn new(store: Arc<Store>, opts: BrokerOptions) -> Self {
        Broker {
            store,
            opts,
            next_queue: AtomicU32::new(0),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A sync send: stores the message and, in sync flush mode, waits for
    /// the fsync that covers it.
    pub async fn send(&self, msg: Outgoing) -> Result<SendResult, BrokerError> {
        topic::validate(&msg.topic)?;
        if msg.key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN) {
            return Err(BrokerError::KeyTooLong { max: MAX_KEY_LEN });
        }
        let queues = self.opts.queues_per_topic.max(1);
        // Keyed messages hash to a fixed queue (per-key order, like
        // RocketMQ's SelectMessageQueueByHash); the rest go round robin.
        let queue_id = match &msg.key {
            Some(k) => (storage::key_index::hash(k) % u64::from(queues)) as u32,
            None => self.next_queue.fetch_add(1, Ordering::Relaxed) % queues,
        };
        let appended = self.store.append(NewMessage {
            topic: msg.topic,
            queue_id,
            key: msg.key,
            tags: msg.tags,
            producer: msg.producer,
            properties: msg.properties,
            body: msg.body,
            born_ms: msg
                .born_ms
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        })?;
        let id = MessageId {
            node: appended.node,
            epoch: appended.epoch,
            pos: appended.pos,
        };
        let status = match self.store.flush_mode() {
            storage::Flush::Async { .. } => SendStatus::SendOk,
            storage::Flush::Sync => match self
                .store
                .wait_flushed(appended.end, self.opts.sync_flush_timeout)
                .await
            {
                FlushOutcome::Flushed => SendStatus::SendOk,
                FlushOutcome::TimedOut => SendStatus::FlushDiskTimeout,
                FlushOutcome::Failed(why) => {
                    tracing::error!(%id, %why, "fsync failed; durability of this message unknown");
                    SendStatus::FlushDiskTimeout
                }
            },
        };
        Ok(SendResult {
            id,
            status,
            queue_id,
            queue_offset: appended.queue_offset,
        })
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
