//! `serve` as a library call: its flags (each over the same-named key of
//! `--config` and `WAYBILL_<KEY>`, see `config::layers`), the log
//! subscriber and the shutdown signals. Every binary
//! that runs a node parses and runs it through here: `waybill serve`, and
//! the own node of `waybill-bench` (that binary run again as
//! `waybill-bench serve` with the same flags), so both nodes are the same.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::config::layers::{self, Layered};
use crate::config::{Config, ConfigError, FlushMode, ReplicationMode};

/// Flags of `waybill serve`; each overrides the same-named key of `--config`
/// and its `WAYBILL_<KEY>` variable. Serialized (given flags only: `None`
/// is left out) as the flags' layer of the configuration.
#[derive(Args, Debug, Default, Serialize)]
pub struct ServeArgs {
    /// TOML file with the same settings (keys use `_`; `[[token]]` entries add named tokens with roles).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective settings and where each came from (default, file, WAYBILL_* variable, flag), then exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// Allow binding HTTP or the broker port to a non-loopback address without any token.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Largest message body a producer may send, in bytes [default: 4 MiB].
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Requests per second one broker-port connection may make (0: no limit) [default: 0].
    #[arg(long)]
    pub rate_limit_per_connection: Option<u32>,
    /// Requests per second one token may make over HTTP and the broker port (0: no limit) [default: 0].
    #[arg(long)]
    pub rate_limit_per_token: Option<u32>,
    /// Parse and validate the settings (file and flags), print them in one
    /// line and exit without starting the node.
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,
    /// Where the commit log, indexes and checkpoint live [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Dashboard and HTTP API address [default: 127.0.0.1:8080].
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Client protocol address [default: 127.0.0.1:9876].
    #[arg(long)]
    pub broker_addr: Option<SocketAddr>,
    /// sync: ack after fsync (group commit); async: ack after write [default: sync].
    #[arg(long, value_enum)]
    pub flush: Option<FlushMode>,
    /// Async flush: fsync period in ms [default: 500].
    #[arg(long)]
    pub flush_interval_ms: Option<u64>,
    /// Sync flush: wait this long for the fsync before FLUSH_DISK_TIMEOUT [default: 5000].
    #[arg(long)]
    pub sync_flush_timeout_ms: Option<u64>,
    /// This node's id (embedded in message ids) [default: 1].
    #[arg(long)]
    pub node_id: Option<u16>,
    /// none | sync | async | raft.
    #[arg(long, value_enum)]
    pub replication: Option<ReplicationMode>,
    /// Another member as ID=BROKER_ADDR (repeatable).
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peer: Vec<String>,
    /// Sync replication: ms to wait for a replica before FLUSH_SLAVE_TIMEOUT.
    #[arg(long)]
    pub replica_timeout_ms: Option<u64>,
    /// Broker address other members use for this node [default: --broker-addr].
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Commit log segment size in bytes [default: 1 GiB].
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Queues per topic [default: 4].
    #[arg(long)]
    pub queues_per_topic: Option<u32>,
    /// Largest HTTP request body in bytes [default: 4 MiB].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Index sync + checkpoint period in ms [default: 1000].
    #[arg(long)]
    pub index_interval_ms: Option<u64>,
    /// Refuse writes while the disk has less free space than this, in MiB; they resume by themselves [default: 64].
    #[arg(long)]
    pub disk_reserve_mb: Option<u64>,
    /// Report the disk as low (health detail, alert) below this free space, in MiB [default: 1024].
    #[arg(long)]
    pub disk_warn_mb: Option<u64>,
    /// Retry delay levels, e.g. `10ms,50ms,1s` [default: RocketMQ's 1s 5s 10s 30s 1m … 2h, from level 3].
    #[arg(long)]
    pub retry_delays: Option<String>,
    /// Retries before a message is dead-lettered [default: 16].
    #[arg(long)]
    pub max_reconsume_times: Option<u32>,
    /// A consumer silent this long (ms) leaves its group [default: 30000].
    #[arg(long)]
    pub client_timeout_ms: Option<u64>,
    /// Quarantine dead letters of messages that reached the DLQ more than N times [default: 3].
    #[arg(long)]
    pub replay_guard: Option<u32>,
    /// Check back with the producer group about a transaction's half message after this many ms [default: 6000].
    #[arg(long)]
    pub tx_check_timeout_ms: Option<u64>,
    /// Checks before the broker rolls an undecided transaction back [default: 15].
    #[arg(long)]
    pub tx_max_checks: Option<u32>,
    /// Trace store: sqlite://FILE, postgres://…, or `none` [default: sqlite://<data-dir>/trace.db].
    #[arg(long)]
    pub trace_db: Option<String>,
    /// Acknowledged messages the tracer may hold unwritten before it sheds (bounds loss windows) [default: 65536].
    #[arg(long)]
    pub trace_queue_messages: Option<u64>,
    /// Require `Authorization: Bearer TOKEN` on every /api call and an `Auth` frame with it first on every
    /// broker-port connection; group members present it to each other.
    #[arg(long)]
    pub auth_token: Option<String>,
    /// PEM certificate chain (leaf first): with --tls-key, the HTTP listener and the broker port speak TLS only.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates trusted on the links to the other members (replication, Raft) [default: --tls-cert].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Broker port: ms a frame may take from its first byte to its last [default: 30000].
    #[arg(long)]
    pub broker_read_timeout_ms: Option<u64>,
    /// Broker port: ms a connection may stay silent between frames [default: 300000].
    #[arg(long)]
    pub broker_idle_timeout_ms: Option<u64>,
    /// Broker port: payload bytes buffered across all connections; beyond, reading waits [default: 64 MiB].
    #[arg(long)]
    pub broker_inflight_bytes: Option<u64>,
    /// Export message spans over OTLP/HTTP to this collector (e.g. http://127.0.0.1:4318).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// POST alerts (fired and resolved) as JSON to this URL.
    #[arg(long)]
    pub alert_webhook: Option<String>,
    /// Alert when a group dead-letters this many messages in a minute (0: off) [default: 1].
    #[arg(long)]
    pub alert_dlq_inflow: Option<u64>,
    /// Alert when a group lags this many messages behind (0: off) [default: 10000].
    #[arg(long)]
    pub alert_consumer_lag: Option<u64>,
    /// Alert when acknowledged data stays un-fsynced this many ms (0: off) [default: 5000].
    #[arg(long)]
    pub alert_unflushed_ms: Option<u64>,
    /// Alert when this many sync-flush sends wait for an fsync (0: off) [default: 10000].
    #[arg(long)]
    pub alert_flush_queue: Option<u64>,
    /// Folder of the built dashboard [default: frontend/dist in the source tree].
    #[arg(long)]
    pub ui_dir: Option<PathBuf>,
    /// Bytes a replica may lag before the replica_lag alert fires (0: off).
    #[arg(long)]
    pub alert_replica_lag: Option<u64>,
    /// Test-only: the engine's files on the fault-injecting file system;
    /// SIGUSR1/SIGUSR2 cut the power (used by `waybill matrix`).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub fault_fs: bool,
    /// Test-only: a broken node that acknowledges sync-flush sends before
    /// the fsync (the matrix's checker must catch it).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub unsafe_ack_before_fsync: bool,
}

impl ServeArgs {
    /// The layers merged (defaults ← `--config` ← `WAYBILL_*` ← these
    /// flags), validated, with each setting's source.
    pub fn layered(&self) -> Result<Layered, ConfigError> {
        let flags = toml::Table::try_from(self).map_err(|e| ConfigError::BadValue {
            key: "(flags)".into(),
            origin: "the command line".into(),
            why: e.to_string(),
        })?;
        let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let mut l = layers::load(self.config.as_deref(), env, flags)?;
        l.config.fault_fs |= self.fault_fs;
        l.config.unsafe_ack_before_fsync |= self.unsafe_ack_before_fsync;
        l.validate()?;
        Ok(l)
    }

    /// The config: defaults ← `--config` file ← `WAYBILL_*` ← these flags, validated.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        Ok(self.layered()?.config)
    }
}

/// What `--check-config` prints for a valid config: one line of the
/// settings that make a node a member of its group, as `key=value`. The
/// trace store shows only its scheme (a URL may hold a password).
pub fn check_line(c: &Config) -> String {
    let store = c.trace_url().map_or("none".to_string(), |u| {
        u.split(':').next().unwrap_or_default().to_string()
    });
    let lower = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    format!(
        "config ok: node_id={} replication={} peers={} advertise_addr={} data_dir={} http_addr={} \
         broker_addr={} flush={} trace_store={store}",
        c.node_id,
        lower(&c.replication),
        c.peer.join(","),
        c.advertise_addr.as_deref().unwrap_or("-"),
        c.data_dir.display(),
        c.http_addr,
        c.broker_addr,
        lower(&c.flush),
    )
}

/// The log filter of a node unless `RUST_LOG` says otherwise.
pub const LOG_FILTER: &str = "info,tower_http=warn";

/// Logs to stderr (colours on a terminal only), filtered by `RUST_LOG`,
/// else by `default_filter` (e.g. [`LOG_FILTER`]).
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
