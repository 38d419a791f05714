//! Send results, with RocketMQ's status names.

use serde::{Deserialize, Serialize};

/// Outcome of a send. Only `SendOk` counts as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendStatus {
    /// Stored (and, with sync flush, fsynced).
    #[serde(rename = "SEND_OK")]
    SendOk,
    /// Stored, but no fsync covered it within `sync_flush_timeout_ms` (or
    /// the fsync failed): durability unknown.
    #[serde(rename = "FLUSH_DISK_TIMEOUT")]
    FlushDiskTimeout,
    /// Sync replication: the replica did not confirm in time.
    #[serde(rename = "FLUSH_SLAVE_TIMEOUT")]
    FlushSlaveTimeout,
    /// Sync replication: no replica connected.
    #[serde(rename = "SLAVE_NOT_AVAILABLE")]
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
