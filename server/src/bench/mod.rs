//! Measuring a Waybill node: what `waybill bench` runs, and what the
//! workspace's bench crate (`waybill-bench`: the same workload against
//! Waybill and a peer such as NATS JetStream) reuses for its Waybill side.
//! Peer clients live in that crate only, so the server links none.
//!
//! # Layout
//! - [`Workload`] (here): the workload flags both binaries take, checked
//!   by [`Workload::validate`].
//! - [`load`]: the closed-loop driver, generic over the target.
//! - [`probe`]: the disk's fsync'd append bandwidth, the baseline of
//!   sync-flush figures.
//! - [`node`]: the own node (a child process) and its fsync counters.
//! - [`own`]: one run against Waybill, from starting the node to its
//!   second probe half.
//! - [`report`]: the figures, as one JSON object or a table.
//! - [`cpu`]: a process's CPU time (µs per acknowledged message).
//! - [`error`]: why a run failed ([`BenchError`]).
//!
//! Invariant: a binary using [`own`] answers `serve` with `waybill
//! serve`'s flags ([`crate::serve::ServeArgs`]): the own node is the
//! current executable run again, as users run a node.

pub mod cpu;
pub mod error;
pub mod load;
pub mod node;
pub mod own;
pub mod probe;
pub mod report;

use std::time::Duration;

use clap::Args;

use crate::config::{FlushMode, ReplicationMode};
pub use error::BenchError;
use load::Load;

/// The workload and its target: the flags of `waybill bench`, shared with
/// `waybill-bench`.
///
/// Defaults: 1 producer × 32 sends in flight, one 1024-byte message per
/// send, 10 s, no consumers, sync flush, a 3 s probe (1.5 s before + 1.5 s
/// after).
#[derive(Debug, Clone, Args)]
pub struct Workload {
    /// Client-protocol address of a running node; without it the bench starts its own node in a temp dir.
    #[arg(long)]
    pub broker: Option<String>,
    /// The broker's `--auth-token`, presented first on every connection (as the HTTP commands read it from the env).
    #[arg(long, env = "WAYBILL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Trace store of the bench's own node (`none` measures without tracing; default: the node's SQLite).
    #[arg(long, conflicts_with = "broker")]
    pub trace_db: Option<String>,
    /// HTTP address of the `--broker` node, for its fsync counters (omitted: those figures are null).
    #[arg(long, requires = "broker")]
    pub http: Option<String>,
    /// Flush mode of the bench's own node (with --broker: the mode that node runs, for the report).
    #[arg(long, value_enum, default_value_t = FlushMode::Sync)]
    pub flush: FlushMode,
    /// Without --broker: start a 3-node group on loopback with this
    /// replication mode and drive its primary/leader (`none`: one node).
    #[arg(long, value_enum, default_value_t = ReplicationMode::None, conflicts_with = "broker")]
    pub replication: ReplicationMode,
    /// Producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Sends each producer keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub inflight: usize,
    /// Body bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Messages per send (one produce request; against a peer, that many pipelined publishes).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Consumers (one group) consuming while the producers send; measures end-to-end latency.
    #[arg(long, default_value_t = 0)]
    pub consumers: usize,
    /// Seconds of the disk probe (256 KiB append + fdatasync), half before and half after the run; 0: none.
    #[arg(long, default_value_t = 3.0)]
    pub probe_secs: f64,
    /// Topic to send to [default: a fresh `bench-…` topic].
    #[arg(long)]
    pub topic: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Largest body the bench sends (the broker refuses far larger frames).
const MAX_SIZE: usize = 4 << 20;

fn usage(msg: impl Into<String>) -> Result<(), BenchError> {
    Err(BenchError::Usage(msg.into()))
}

impl Workload {
    /// Refuses shapes the bench cannot run (before anything starts).
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.producers == 0 || self.inflight == 0 || self.batch == 0 {
            return usage("--producers, --inflight and --batch must be at least 1");
        }
        if self.batch > 4096 || self.batch.saturating_mul(self.size) > MAX_SIZE {
            return usage(format!(
                "--batch × --size must stay within {MAX_SIZE} bytes (and --batch within 4096)"
            ));
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            return usage("--duration must be between 0 and 86400 seconds");
        }
        if !(self.probe_secs.is_finite() && (0.0..=600.0).contains(&self.probe_secs)) {
            return usage("--probe-secs must be between 0 and 600");
        }
        if self.size == 0 || self.size > MAX_SIZE {
            return usage(format!("--size must be between 1 and {MAX_SIZE} bytes"));
        }
        if self.consumers > 0 && self.size < 8 {
            return usage("--consumers needs --size of at least 8 (bodies carry their birth time)");
        }
        if let Some(t) = &self.topic {
            crate::broker::topic::validate(t).map_err(|source| BenchError::Topic {
                topic: t.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The workload, with a progress line labelled `label` on stderr
    /// unless `--json` keeps stderr quiet.
    pub fn load(&self, label: &str) -> Load {
        Load {
            producers: self.producers,
            inflight: self.inflight,
            size: self.size,
            batch: self.batch,
            duration: Duration::from_secs_f64(self.duration),
            progress: (!self.json).then(|| label.to_string()),
        }
    }

    pub fn flush_name(&self) -> &'static str {
        match self.flush {
            FlushMode::Sync => "sync",
            FlushMode::Async => "async",
        }
    }

    pub fn replication_name(&self) -> &'static str {
        match self.replication {
            ReplicationMode::None => "none",
            ReplicationMode::Sync => "sync",
            ReplicationMode::Async => "async",
            ReplicationMode::Raft => "raft",
        }
    }
}

/// A suffix that keeps names (topics, groups, streams) of concurrent runs
/// apart: the pid and the clock's nanoseconds.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}
