//! Waybill: a durable message broker that traces every message.
//!
//! # Layout (follows the data path)
//! - [`storage`]: commit log segments, CRC'd records, group-commit flusher,
//!   consume queue and key indexes, checkpoint, crash recovery, fault FS.
//! - [`model`]: value types every layer uses (message ids, system topics).
//! - [`broker`]: topic rules, queue choice, consumer state, `SendStatus`;
//!   emits events to a sink it owns and names no layer above it.
//! - [`replication`]: primary/replica log shipping, roles, terms, failover.
//! - [`trace`]: the tracer: trace store (sqlx), timelines, loss points,
//!   audit, search; `trace::sink` fans the broker's events out to the
//!   tracer, OTel, the live feed and alerts.
//! - [`port`]: the broker port (front door): frames routed by kind to the
//!   broker, replication or Raft from one table.
//! - [`tls`]: `--tls-cert`/`--tls-key`: TLS on both ports, and on the
//!   links to the other members.
//! - [`api`]: the axum HTTP API (`app()`), errors as `{"error": ...}`.
//! - [`shutdown`]: the stop every listener and live stream watches, and the
//!   drain of requests in flight (graceful shutdown).
//! - [`time`]: wall-clock milliseconds and their RFC 3339 form (any layer).
//! - [`config`]: defaults ← TOML file ← command-line flags.
//! - [`server`]: wires config, store, broker and HTTP into a running node.
//! - [`serve`]: `serve`'s flags, log subscriber and signals, for every
//!   binary that runs a node (`waybill`, `waybill-bench`).
//! - [`bench`]: load driver, disk probe, own node and report of `waybill
//!   bench`, reused by the workspace's bench crate; peer clients (NATS)
//!   live only there.
//! - [`matrix`]: `waybill matrix`: real groups of nodes under injected
//!   faults (kill, power cut, primary loss, partition, corruption, full
//!   disk), a checker against producers, consumers and the audit.

pub mod api;
pub mod bench;
pub mod broker;
pub mod config;
pub mod matrix;
pub mod model;
pub mod port;
pub mod replication;
pub mod serve;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod time;
pub mod tls;
pub mod trace;
