//! `waybill-client`: producer and consumer SDK for the Waybill broker.
//!
//! Follows RocketMQ's client concepts: a [`Producer`] with `send` (sync),
//! `send_async` (callback) and `send_oneway`, retrying failed sends
//! `retry_times_when_send_failed` times on the next broker; a
//! [`PushConsumer`] whose handler returns [`ConsumeResult::Success`] or
//! [`ConsumeResult::ReconsumeLater`], with offsets committed only past
//! handled messages (or on delivery in the lossy `auto_commit` mode).
//!
//! # Layout
//! - [`wire`]: frame header, CRC, primitive codecs.
//! - [`protocol`]: requests, responses and their payloads.
//! - [`properties`]: property names with a meaning to Waybill; which ones a
//!   producer may not set.
//! - [`tracecontext`]: W3C `traceparent` on every message.
//! - [`connection`]: one pipelined TCP connection (many requests in flight).
//! - [`tls`]: TLS to the broker port (rustls with *ring*): whom to trust.
//! - [`producer`]: the `Producer`.
//! - [`consumer`]: the `PushConsumer`.
//! - [`transaction`]: `send_in_transaction` and check-backs.
//! - [`outbox`] (feature `sql`): the transactional outbox and its relay.
//! - [`inbox`] (feature `sql`, Redis with `redis`): idempotent consumption.

pub mod connection;
pub mod consumer;
#[cfg(feature = "sql")]
pub mod inbox;
#[cfg(feature = "sql")]
pub mod outbox;
pub mod producer;
pub mod properties;
pub mod protocol;
#[cfg(feature = "sql")]
pub mod sql;
pub mod tls;
pub mod tracecontext;
pub mod transaction;
pub mod wire;

pub use connection::{ClientError, Connection};
pub use consumer::{ConsumeResult, ConsumerOptions, PushConsumer, MAX_REASON};
pub use producer::{Producer, ProducerOptions, SendResult};
pub use protocol::{Delivered, Message, TransactionCheck, TransactionState};
pub use tls::TlsClient;
pub use transaction::{TransactionChecker, TransactionSendResult};

/// Outcome of a send, with RocketMQ's names. Only `SendOk` is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendStatus {
    /// Stored (and, with sync flush, fsynced; with sync replication, on a replica).
    SendOk,
    /// Stored, but no fsync covered it in time: durability unknown.
    FlushDiskTimeout,
    /// Sync replication: the replica did not confirm in time.
    FlushSlaveTimeout,
    /// Sync replication: no replica connected.
    SlaveNotAvailable,
}

impl SendStatus {
    pub fn name(self) -> &'static str {
        match self {
            SendStatus::SendOk => "SEND_OK",
            SendStatus::FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
            SendStatus::FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
            SendStatus::SlaveNotAvailable => "SLAVE_NOT_AVAILABLE",
        }
    }
}

impl std::fmt::Display for SendStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
