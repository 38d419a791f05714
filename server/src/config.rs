//! Server configuration: defaults, then `--config FILE` (TOML), then
//! `WAYBILL_<KEY>` environment variables, then flags ([`layers`] merges
//! them and remembers where each value came from for `--print-config`).
//!
//! Every `waybill serve` flag has a TOML key of the same name with `_`
//! instead of `-` (`--flush-interval-ms` ↔ `flush_interval_ms`). Durability
//! is one enum ([`crate::storage::Flush`]), not a set of booleans. Named
//! tokens (`[[token]]`, each with a role) come from the file only.

pub mod layers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::broker::retry::{parse_delays, RetryPolicy};
use crate::model::access::{Role, Tokens, AUTH_TOKEN_NAME};
use crate::storage::Flush;

/// `--flush` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    Sync,
    Async,
}

/// `--replication` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    None,
    Sync,
    Async,
    Raft,
}

/// Effective configuration of one node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub broker_addr: SocketAddr,
    pub flush: FlushMode,
    /// Async flush: fsync period (RocketMQ's flushIntervalCommitLog, 500 ms).
    pub flush_interval_ms: u64,
    /// `none`, `sync` (ack after a replica has it), `async`, `raft`.
    pub replication: ReplicationMode,
    /// The other members, `ID=BROKER_ADDR` (TOML: `peer = ["2=…", …]`).
    pub peer: Vec<String>,
    /// The broker address other members reach this node at (default: the
    /// bound `broker_addr`; set it when binding 0.0.0.0, e.g. in containers).
    pub advertise_addr: Option<String>,
    /// Sync replication: how long a send waits for a replica before
    /// answering `FLUSH_SLAVE_TIMEOUT`.
    pub replica_timeout_ms: u64,
    /// Sync flush: how long a send waits for its fsync (RocketMQ's
    /// syncFlushTimeout, 5 s) before `FLUSH_DISK_TIMEOUT`.
    pub sync_flush_timeout_ms: u64,
    pub node_id: u16,
    /// Commit log segment size (RocketMQ's mappedFileSizeCommitLog, 1 GiB).
    pub segment_bytes: u64,
    pub queues_per_topic: u32,
    /// Largest accepted HTTP request body.
    pub max_body_bytes: usize,
    /// How often index files are synced and checkpointed.
    pub index_interval_ms: u64,
    /// Writes are refused (and resume by themselves) while the data
    /// directory's disk has less free space than this, in MiB.
    pub disk_reserve_mb: u64,
    /// Below this much free space (MiB) the disk is reported low: a
    /// `/healthz` detail and the `disk_space` alert, before writes stop.
    pub disk_warn_mb: u64,
    /// Retry delay levels, e.g. `10ms,50ms,1s` (default: RocketMQ's 18
    /// levels, first retry at level 3).
    pub retry_delays: Option<String>,
    /// Retries before a message goes to the dead-letter queue (16).
    pub max_reconsume_times: u32,
    /// A consumer silent this long leaves its group and its queues move.
    pub client_timeout_ms: u64,
    /// Dead letters of a message that reached the DLQ more than this many
    /// times are quarantined rather than replayed.
    pub replay_guard: u32,
    /// A transaction's half message undecided this long (ms since it was
    /// stored or last checked) is checked back with its producer group
    /// (RocketMQ's `transactionTimeOut`).
    pub tx_check_timeout_ms: u64,
    /// Checks before an undecided transaction is rolled back (RocketMQ's
    /// `transactionCheckMax`).
    pub tx_max_checks: u32,
    /// Trace store: `sqlite://FILE`, `postgres://…`, or `none` to turn
    /// tracing off. Default: `sqlite://<data_dir>/trace.db`.
    pub trace_db: Option<String>,
    /// Most acknowledged messages the tracer holds unwritten (queued or in
    /// its batch) before it sheds; the largest count a loss window can have.
    pub trace_queue_messages: u64,
    /// Token every `/api` call must carry as `Authorization: Bearer`, and
    /// every broker-port connection must present first (`Auth` frame);
    /// members of a group present it to each other (none: both open).
    pub auth_token: Option<String>,
    /// Named tokens, each with a role (`viewer`, `operator`, `admin`); from
    /// the config file only (`[[token]]` with `name`, `token`, `role`).
    pub token: Vec<NamedToken>,
    /// Allow binding HTTP or the broker port to a non-loopback address
    /// without any token (otherwise such a start is refused).
    pub insecure: bool,
    /// Largest message body a producer may send, in bytes (RocketMQ's
    /// maxMessageSize, 4 MiB).
    pub max_message_bytes: usize,
    /// Requests per second one broker-port connection may make (0: no limit).
    pub rate_limit_per_connection: u32,
    /// Requests per second one token may make, over HTTP and the broker
    /// port together (0: no limit).
    pub rate_limit_per_token: u32,
    /// PEM certificate chain (leaf first) and private key: with both, the
    /// HTTP listener and the broker port speak TLS only ([`crate::tls`]).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM certificates this node trusts on its links to the other members
    /// (replication, Raft) when TLS is on. Default: `tls_cert` itself (a
    /// group sharing one certificate, or a chain file holding the CA).
    pub tls_ca: Option<PathBuf>,
    /// Broker port: ms a frame may take from its first header byte to its
    /// last payload byte (see `broker::frames` for why 30 s).
    pub broker_read_timeout_ms: u64,
    /// Broker port: ms a connection may stay silent between frames (see
    /// `broker::frames` for why 5 min).
    pub broker_idle_timeout_ms: u64,
    /// Broker port: payload bytes buffered across all connections at once;
    /// when they are taken, reading waits (TCP backpressure). At least the
    /// 16 MiB frame limit, so any valid frame can be read.
    pub broker_inflight_bytes: u64,
    /// OTLP/HTTP collector base URL (spans go to `<url>/v1/traces`).
    pub otlp_endpoint: Option<String>,
    /// URL that gets a JSON POST when an alert fires or resolves.
    pub alert_webhook: Option<String>,
    /// Alert thresholds (0 turns a rule off): dead letters per group per
    /// minute, consumer lag in messages, age (ms) of acknowledged data not
    /// yet fsynced, sync-flush sends waiting for their fsync.
    pub alert_dlq_inflow: u64,
    pub alert_consumer_lag: u64,
    pub alert_unflushed_ms: u64,
    pub alert_flush_queue: u64,
    /// Folder of the built dashboard (`index.html` + wasm). Default: the
    /// repository's `frontend/dist`, where `./scripts/run.sh` builds it.
    pub ui_dir: Option<PathBuf>,
    /// Bytes a replica may lag behind its primary before `replica_lag` fires.
    pub alert_replica_lag: u64,
    /// Test-only (hidden flag `--fault-fs`, never in a config file): the
    /// engine's files live on the fault-injecting file system and SIGUSR1
    /// (drop) or SIGUSR2 (tear) cuts the power (`storage/powercut.rs`).
    #[serde(skip)]
    pub fault_fs: bool,
    /// Test-only (hidden flag `--unsafe-ack-before-fsync`): under sync
    /// flush, acknowledge before the fsync. A deliberately broken node the
    /// reliability matrix must catch.
    #[serde(skip)]
    pub unsafe_ack_before_fsync: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            broker_addr: SocketAddr::from(([127, 0, 0, 1], 9876)),
            flush: FlushMode::Sync,
            flush_interval_ms: 500,
            replication: ReplicationMode::None,
            peer: Vec::new(),
            replica_timeout_ms: 5000,
            advertise_addr: None,
            sync_flush_timeout_ms: 5000,
            node_id: 1,
            segment_bytes: 1 << 30,
            queues_per_topic: 4,
            max_body_bytes: crate::api::DEFAULT_BODY_LIMIT,
            index_interval_ms: 1000,
            disk_reserve_mb: 64,
            disk_warn_mb: 1024,
            retry_delays: None,
            max_reconsume_times: 16,
            client_timeout_ms: 30_000,
            replay_guard: 3,
            tx_check_timeout_ms: 6000,
            tx_max_checks: 15,
            trace_db: None,
            trace_queue_messages: crate::trace::DEFAULT_MAX_UNWRITTEN,
            auth_token: None,
            token: Vec::new(),
            insecure: false,
            max_message_bytes: crate::broker::limits::DEFAULT_MAX_MESSAGE_BYTES,
            rate_limit_per_connection: 0,
            rate_limit_per_token: 0,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            broker_read_timeout_ms: 30_000,
            broker_idle_timeout_ms: 300_000,
            broker_inflight_bytes: 64 << 20,
            otlp_endpoint: None,
            alert_webhook: None,
            alert_dlq_inflow: 1,
            alert_consumer_lag: 10_000,
            alert_unflushed_ms: 5_000,
            alert_flush_queue: 10_000,
            ui_dir: None,
            alert_replica_lag: 64 << 20,
            fault_fs: false,
            unsafe_ack_before_fsync: false,
        }
    }
}

/// One `[[token]]` of the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// Recorded with every write the token makes (audit, timelines).
    pub name: String,
    /// The secret, sent as `Authorization: Bearer …` or in `Auth`.
    pub token: String,
    pub role: Role,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid setting {name}: {why}")]
    Invalid { name: &'static str, why: String },
    /// A key no setting has (a typo would otherwise be ignored silently).
    #[error("unknown setting {key} in {origin}")]
    UnknownKey { key: String, origin: String },
    /// A value of the wrong type or out of range, with where it came from.
    #[error("invalid setting {key} (from {origin}): {why}")]
    BadValue { key: String, origin: String, why: String },
}

impl Config {
    /// Parses TOML text over the defaults and validates the result, as
    /// `waybill serve --config` does with no flags given (the config
    /// parser's fuzz target calls this).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let path = std::path::Path::new("<text>");
        let l = layers::merge(Some((path, text)), [], toml::Table::new())?;
        l.validate()?;
        Ok(l.config)
    }

    /// Checks ranges that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, why: &str| Err(ConfigError::Invalid { name, why: why.into() });
        if self.flush_interval_ms == 0 {
            return invalid("flush_interval_ms", "must be at least 1");
        }
        if self.sync_flush_timeout_ms == 0 {
            return invalid("sync_flush_timeout_ms", "must be at least 1");
        }
        if self.segment_bytes < 4096 {
            return invalid("segment_bytes", "must be at least 4096");
        }
        if self.queues_per_topic == 0 || self.queues_per_topic > 1024 {
            return invalid("queues_per_topic", "must be between 1 and 1024");
        }
        if self.max_body_bytes == 0 {
            return invalid("max_body_bytes", "must be at least 1");
        }
        if self.client_timeout_ms == 0 {
            return invalid("client_timeout_ms", "must be at least 1");
        }
        if self.replica_timeout_ms == 0 {
            return invalid("replica_timeout_ms", "must be at least 1");
        }
        if self.trace_queue_messages == 0 {
            return invalid("trace_queue_messages", "must be at least 1");
        }
        if self.broker_read_timeout_ms == 0 {
            return invalid("broker_read_timeout_ms", "must be at least 1");
        }
        if self.broker_idle_timeout_ms == 0 {
            return invalid("broker_idle_timeout_ms", "must be at least 1");
        }
        let frame = waybill_client::wire::MAX_FRAME as u64;
        if self.broker_inflight_bytes < frame || self.broker_inflight_bytes > u64::from(u32::MAX) {
            return invalid(
                "broker_inflight_bytes",
                "must be between the 16 MiB frame limit (16777216) and 4294967295",
            );
        }
        if self.auth_token.as_deref().is_some_and(str::is_empty) {
            return invalid("auth_token", "must not be empty");
        }
        self.validate_tokens()?;
        if !self.token.is_empty() && self.auth_token.is_none() && self.replication != ReplicationMode::None {
            return invalid(
                "auth_token",
                "group members present auth_token to each other: set it beside the named tokens",
            );
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > waybill_client::wire::MAX_FRAME / 2 {
            return invalid(
                "max_message_bytes",
                "must be between 1 and 8388608 (half the 16 MiB frame limit)",
            );
        }
        if self.tokens().is_none() && !self.insecure {
            for (name, addr) in [("http_addr", self.http_addr), ("broker_addr", self.broker_addr)] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid {
                        name,
                        why: format!(
                            "{addr} is reachable beyond this machine and no token is set: anyone who can reach it \
                             could read and write; set auth_token or [[token]] entries, or pass --insecure"
                        ),
                    });
                }
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return invalid("tls_key", "--tls-cert needs --tls-key (both or neither)"),
            (None, Some(_)) => return invalid("tls_cert", "--tls-key needs --tls-cert (both or neither)"),
            (None, None) if self.tls_ca.is_some() => {
                return invalid(
                    "tls_ca",
                    "is for the links of a TLS node: it needs --tls-cert and --tls-key",
                )
            }
            _ => {}
        }
        self.retry_policy()?;
        let peers = self.peers()?;
        match self.replication {
            ReplicationMode::None if !peers.is_empty() => {
                return invalid("peer", "peers need --replication sync or async")
            }
            ReplicationMode::Sync | ReplicationMode::Async if peers.is_empty() => {
                return invalid(
                    "replication",
                    "sync and async replication need at least one --peer ID=ADDR",
                )
            }
            ReplicationMode::Raft if peers.len() < 2 => {
                return invalid(
                    "replication",
                    "raft needs a group of at least 3 members (2 or more --peer)",
                )
            }
            _ => {}
        }
        Ok(())
    }

    /// Named tokens: names 1–64 of `A-Z a-z 0-9 . _ @ -`, unique and not
    /// `auth_token`'s; secrets of 16–512 visible ASCII characters, unique.
    fn validate_tokens(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Invalid { name: "token", why });
        let mut names = std::collections::BTreeSet::new();
        let mut secrets: std::collections::BTreeSet<&str> = self.auth_token.as_deref().into_iter().collect();
        for t in &self.token {
            let ok_name = |c: char| c.is_ascii_alphanumeric() || "._@-".contains(c);
            if t.name.is_empty() || t.name.len() > 64 || !t.name.chars().all(ok_name) {
                return bad(format!("name {:?} must be 1 to 64 of A-Z a-z 0-9 . _ @ -", t.name));
            }
            if t.name == AUTH_TOKEN_NAME || !names.insert(t.name.as_str()) {
                return bad(format!(
                    "name {:?} is used twice (auth_token is taken by --auth-token)",
                    t.name
                ));
            }
            if t.token.len() < 16 || t.token.len() > 512 || !t.token.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(format!(
                    "the token of {:?} must be 16 to 512 visible ASCII characters (no spaces)",
                    t.name
                ));
            }
            if !secrets.insert(t.token.as_str()) {
                return bad(format!("the token of {:?} is also another entry's token", t.name));
            }
        }
        Ok(())
    }

    /// The tokens this node accepts, or `None` for an open node.
    pub fn tokens(&self) -> Option<Tokens> {
        Tokens::new(
            self.auth_token.as_deref(),
            self.token.iter().map(|t| (t.name.clone(), t.token.clone(), t.role)),
        )
    }

    /// The other members by id, parsed from `peer` (`ID=BROKER_ADDR`).
    pub fn peers(&self) -> Result<std::collections::BTreeMap<u16, String>, ConfigError> {
        let mut out = std::collections::BTreeMap::new();
        for p in &self.peer {
            let bad = |why: String| ConfigError::Invalid { name: "peer", why };
            let (id, addr) = p
                .split_once('=')
                .ok_or_else(|| bad(format!("{p:?} is not ID=BROKER_ADDR")))?;
            let id: u16 = id
                .trim()
                .parse()
                .map_err(|_| bad(format!("{id:?} is not a node id (0-65535)")))?;
            let addr = addr.trim();
            if addr.parse::<SocketAddr>().is_err() && !addr.contains(':') {
                return Err(bad(format!("{addr:?} is not HOST:PORT")));
            }
            if id == self.node_id {
                return Err(bad(format!("peer id {id} is this node's own --node-id")));
            }
            if out.insert(id, addr.to_string()).is_some() {
                return Err(bad(format!("peer id {id} given twice")));
            }
        }
        Ok(out)
    }

    /// The trace store URL, or `None` when tracing is off.
    pub fn trace_url(&self) -> Option<String> {
        match self.trace_db.as_deref() {
            Some("none") | Some("off") => None,
            Some(url) => Some(url.to_string()),
            None => Some(format!("sqlite://{}", self.data_dir.join("trace.db").display())),
        }
    }

    /// Where the dashboard's files are: `ui_dir`, or the build output in
    /// this source tree (`frontend/dist`, written by `cargo run -p xtask --
    /// dashboard`).
    pub fn ui_dir(&self) -> PathBuf {
        self.ui_dir.clone().unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("frontend/dist")
        })
    }

    /// The alert rules these settings describe.
    pub fn alert_rules(&self) -> crate::trace::alerts::AlertRules {
        crate::trace::alerts::AlertRules {
            dlq_inflow_per_min: self.alert_dlq_inflow,
            consumer_lag: self.alert_consumer_lag,
            unflushed_age_ms: self.alert_unflushed_ms,
            flush_queue: self.alert_flush_queue,
            replica_lag_bytes: self.alert_replica_lag,
        }
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> Result<RetryPolicy, ConfigError> {
        match &self.retry_delays {
            None => Ok(RetryPolicy {
                max_reconsume_times: self.max_reconsume_times,
                ..RetryPolicy::default()
            }),
            Some(s) => parse_delays(s)
                .map(|d| RetryPolicy::with_delays(d, self.max_reconsume_times))
                .map_err(|why| ConfigError::Invalid {
                    name: "retry_delays",
                    why,
                }),
        }
    }

    /// The storage flush policy these settings describe.
    pub fn flush_policy(&self) -> Flush {
        match self.flush {
            FlushMode::Sync => Flush::Sync,
            FlushMode::Async => Flush::Async {
                interval: Duration::from_millis(self.flush_interval_ms),
            },
        }
    }
}
