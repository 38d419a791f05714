//! What the broker tells the tracer. Cheap to build on the hot path: owned
//! strings and integers, no I/O; the writer turns them into rows.

/// A stored message: its own "produce" and "store" stages in one event.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub topic: String,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub pos: u64,
    pub end: u64,
    pub born_ms: i64,
    pub stored_ms: i64,
    /// When the producer was answered (after the fsync in sync flush mode).
    pub acked_ms: i64,
    pub producer: Option<String>,
    /// `sync`, `async` or `oneway`, as the producer declared it.
    pub send_mode: String,
    /// `sync` or `async`: what the store's flush mode was.
    pub flush_mode: &'static str,
    /// The SendStatus name the producer was answered (none for oneway).
    pub send_status: &'static str,
    /// `none`, `sync` or `async`: the replication mode it was stored under.
    pub replication: &'static str,
    pub traceparent: Option<String>,
}

/// A message-level event (retry, dead letter, replay, retry delivery, loss).
#[derive(Debug, Clone)]
pub struct MessageEvent {
    /// The message's original id.
    pub message_id: String,
    pub stage: &'static str,
    pub at_ms: i64,
    pub group: Option<String>,
    pub outcome: &'static str,
    pub detail: String,
    /// The record this event is about (a retry record, a dead letter…).
    pub record: Option<RecordRef>,
    /// Delivery attempt (1 = first delivery).
    pub attempt: Option<u32>,
}

/// Where a record sits: id, topic, queue and offset.
#[derive(Debug, Clone)]
pub struct RecordRef {
    pub id: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
}

#[derive(Debug, Clone)]
pub enum TraceEvent {
    Stored(Box<Stored>),
    Message(Box<MessageEvent>),
    /// A pull handed offsets `[from, to)` of a queue to a group.
    Delivered {
        group: String,
        topic: String,
        queue_id: u32,
        from: u64,
        to: u64,
        at_ms: i64,
    },
    /// A group committed `offset` for a queue.
    Committed {
        group: String,
        topic: String,
        queue_id: u32,
        offset: u64,
        at_ms: i64,
        auto_commit: bool,
    },
}
