//! What the broker tells its observers (the tracer, the live feed). Cheap
//! to build on the hot path: owned strings and integers, no I/O; the trace
//! writer turns them into rows. The broker owns these types; observers
//! above it import them, never the other way round.

/// One message of a produce request as placed in the log. Plain integers
/// and the key the request already owned: no formatting on the hot path.
#[derive(Debug, Clone)]
pub struct StoredMsg {
    /// Node and boot epoch that wrote it (with `pos`, its id).
    pub node: u16,
    pub epoch: u32,
    pub pos: u64,
    pub end: u64,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub born_ms: i64,
    pub stored_ms: i64,
    pub key: Option<String>,
    /// `sync`, `async` or `oneway`, as the producer declared it.
    pub send_mode: &'static str,
    /// Which try of the producer's send stored it (1 = the first).
    pub attempt: u32,
    /// Its W3C traceparent, only when spans are wanted (OTel).
    pub traceparent: Option<String>,
}

/// A produce request's messages: their "produce" and "store" stages, one
/// event per request. The writer turns these into runs (see
/// [`super::runs`]), not per-message rows: the log holds each message's
/// own fields, the run adds what only the broker knew (how and when it
/// answered).
#[derive(Debug, Clone)]
pub struct Stored {
    pub topic: String,
    pub messages: Vec<StoredMsg>,
    /// When the producer was answered (after the fsync in sync flush mode).
    pub acked_ms: i64,
    /// `sync` or `async`: the store's flush mode.
    pub flush_mode: &'static str,
    /// The SendStatus name the producers were answered (oneway: `NONE`).
    pub send_status: &'static str,
    /// `none`, `sync`, `async` or `raft`: the replication mode.
    pub replication: &'static str,
}

impl Stored {
    /// The status a message of this request was answered with.
    pub fn status_of(&self, m: &StoredMsg) -> &'static str {
        if m.send_mode == "oneway" {
            "NONE"
        } else {
            self.send_status
        }
    }
}

/// A message-level event (retry, dead letter, replay, retry delivery, loss).
#[derive(Debug, Clone)]
pub struct MessageEvent {
    /// The message's original id.
    pub message_id: String,
    pub stage: crate::model::Stage,
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
        /// The committing group handles through an inbox remembering keys
        /// this long (0 = forever): its redeliveries are deduplicated.
        dedupe_window_ms: Option<u64>,
        /// `(queue offset, handler ms)` of the messages this commit covers
        /// that the handler finished with success.
        handled: Vec<(u64, u32)>,
        /// `(queue offset, first handled as …)` of the messages the inbox
        /// acknowledged as duplicates without running the handler.
        duplicates: Vec<(u64, String)>,
    },
}

impl TraceEvent {
    /// Messages a producer was (or will be) answered for: what the
    /// tracer's bound on unwritten messages counts.
    pub fn message_count(&self) -> u64 {
        match self {
            TraceEvent::Stored(s) => s.messages.len() as u64,
            _ => 0,
        }
    }

    /// A time its sender read before recording it: `acked_ms` of a
    /// produce request (taken just before the record, which precedes the
    /// answer). Other events do not promise one.
    pub fn recorded_after(&self) -> Option<i64> {
        match self {
            TraceEvent::Stored(s) => Some(s.acked_ms),
            _ => None,
        }
    }
}

impl Stored {
    /// Whether a message of this request was acknowledged without an
    /// fsync behind it (`SEND_OK` under async flush, not oneway): a power
    /// loss can take it, so losing its trace row leaves a loss window.
    pub fn at_risk(&self, m: &StoredMsg) -> bool {
        self.flush_mode == "async" && self.status_of(m) == "SEND_OK"
    }
}

/// What became of an event handed to an observer that may shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Recorded {
    /// Queued: it will be written, or its loss is bounded by the queue.
    Queued,
    /// Shed: no row will name it (a gap row counts it).
    Shed,
}
