//! The values requests and responses carry: messages as sent and as
//! delivered, produce results, check-backs, a member's inbox declaration.
//! Plain data; their codecs live with the requests in [`super`].

use std::collections::BTreeMap;

use crate::SendStatus;

/// A half message whose transaction the broker asks its producer group
/// about (RocketMQ's check-back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionCheck {
    /// Id of the half message (what `send_in_transaction` returned).
    pub id: String,
    /// The topic it goes to when committed.
    pub topic: String,
    /// How many times the broker has asked (1 = first check).
    pub check_times: u32,
    pub message: Message,
}

/// A message as a producer sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub key: Option<String>,
    pub tags: Option<String>,
    pub producer: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Creation time at the producer (ms since the epoch).
    pub born_ms: i64,
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The message's id as its producer was told; the same across retries.
    pub id: String,
    /// Id of this delivery's record (differs from `id` for retries).
    pub record_id: String,
    /// The topic the producer sent to.
    pub topic: String,
    /// Where this record sits (for commits): topic and queue.
    pub queue_topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub reconsume_times: u32,
    pub stored_ms: i64,
    pub message: Message,
}

/// Result of one message of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub status: SendStatus,
    pub id: String,
    pub queue_id: u32,
    pub queue_offset: u64,
}

/// How a member of a group deduplicates (declared on each heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedupe {
    /// `sqlite`, `postgres` or `redis`.
    pub backend: String,
    /// How long a handled key is remembered; 0 = forever.
    pub window_ms: u64,
}
