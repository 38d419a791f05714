//! A node's place in its replication group: mode, role, term, replicas.
//!
//! The term and the primary's id are persisted in `<data dir>/cluster.json`
//! (written to a temp file, fsynced, renamed, directory fsynced) before a
//! role change takes effect, so a restart never forgets a promotion. On the
//! primary, each connected replica's confirmed position feeds one
//! `replicated` watch: sync-replication sends wait on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use waybill_client::SendStatus;

use super::ReplicationError;

/// `--replication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    None,
    Sync,
    Async,
    /// A Raft group ([`super::raft`]); roles come from Raft, not from here.
    Raft,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Sync => "sync",
            Mode::Async => "async",
            Mode::Raft => "raft",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    /// Was primary, learned of a newer term: refuses writes until restarted
    /// (it then rejoins as a replica).
    Fenced,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Fenced => "fenced",
        }
    }
}

/// The persisted part.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Persisted {
    pub term: u64,
    pub primary: Option<u16>,
}

/// What the primary knows of one replica.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicaInfo {
    pub connected: bool,
    pub broker_addr: String,
    pub http_addr: String,
    pub written: u64,
    pub durable: u64,
    pub last_ack_ms: i64,
    /// Connection counter: a stale session must not mark a newer one gone.
    #[serde(skip)]
    pub session: u64,
}

struct State {
    role: Role,
    persisted: Persisted,
    /// Replica: what it has confirmed to its primary.
    confirmed: u64,
}

pub struct Cluster {
    pub node_id: u16,
    pub mode: Mode,
    /// Other members: id → broker address.
    pub peers: BTreeMap<u16, String>,
    pub broker_addr: Mutex<String>,
    pub http_addr: Mutex<String>,
    /// How long a sync-replication send waits for a replica.
    pub replica_timeout: Duration,
    /// How this node reaches the other members' broker ports: the group's
    /// `--auth-token` (a group shares one) and TLS when it is on.
    pub link: super::status::Link,
    state_path: PathBuf,
    state: Mutex<State>,
    replicas: Mutex<BTreeMap<u16, ReplicaInfo>>,
    connected: AtomicUsize,
    replicated: watch::Sender<u64>,
    sessions: std::sync::atomic::AtomicU64,
    /// The follower task of a replica, aborted on promotion.
    pub(crate) follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// Loads the persisted state from `data_dir` (none on a fresh node).
    pub fn new(
        node_id: u16,
        mode: Mode,
        peers: BTreeMap<u16, String>,
        data_dir: &Path,
        replica_timeout: Duration,
        link: super::status::Link,
    ) -> Result<Cluster, ReplicationError> {
        let state_path = data_dir.join("cluster.json");
        let persisted = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ReplicationError::State {
                path: state_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(source) => {
                return Err(ReplicationError::State {
                    path: state_path,
                    source,
                })
            }
        };
        Ok(Cluster {
            node_id,
            mode,
            peers,
            broker_addr: Mutex::new(String::new()),
            http_addr: Mutex::new(String::new()),
            replica_timeout,
            link,
            state_path,
            state: Mutex::new(State {
                role: Role::Replica,
                persisted,
                confirmed: 0,
            }),
            replicas: Mutex::new(BTreeMap::new()),
            connected: AtomicUsize::new(0),
            replicated: watch::channel(0).0,
            sessions: std::sync::atomic::AtomicU64::new(0),
            follower: Mutex::new(None),
        })
    }

    /// The lowest id among the members: primary of a fresh group.
    pub fn initial_primary(&self) -> u16 {
        self.peers
            .keys()
            .copied()
            .chain([self.node_id])
            .min()
            .unwrap_or(self.node_id)
    }

    pub fn role(&self) -> Role {
        lock(&self.state).role
    }

    pub fn persisted(&self) -> Persisted {
        lock(&self.state).persisted
    }

    pub fn term(&self) -> u64 {
        lock(&self.state).persisted.term
    }

    /// The primary this node knows of.
    pub fn primary(&self) -> Option<u16> {
        let s = lock(&self.state);
        match s.role {
            Role::Primary => Some(self.node_id),
            _ => s.persisted.primary,
        }
    }

    /// Writes `p` durably, then makes `role` current.
    pub fn set(&self, role: Role, p: Persisted) -> Result<(), ReplicationError> {
        let mut s = lock(&self.state);
        if s.persisted != p {
            write_state(&self.state_path, &p)?;
            s.persisted = p;
        }
        s.role = role;
        Ok(())
    }

    /// Becomes primary with a term above every one seen.
    pub fn promote(&self) -> Result<u64, ReplicationError> {
        let p = {
            let s = lock(&self.state);
            if s.role == Role::Primary {
                return Err(ReplicationError::Refused(format!(
                    "node {} is already the primary (term {})",
                    self.node_id, s.persisted.term
                )));
            }
            Persisted {
                term: s.persisted.term + 1,
                primary: Some(self.node_id),
            }
        };
        if let Some(task) = lock(&self.follower).take() {
            task.abort();
        }
        self.set(Role::Primary, p)?;
        tracing::warn!(node = self.node_id, term = p.term, "promoted to primary");
        Ok(p.term)
    }

    /// A newer term exists elsewhere: stop acting as primary.
    pub fn fence(&self, term: u64, primary: Option<u16>) {
        let mut s = lock(&self.state);
        if s.role == Role::Primary && term > s.persisted.term {
            tracing::error!(
                node = self.node_id,
                own = s.persisted.term,
                newer = term,
                "a newer primary exists: this node stops accepting writes; restart it to rejoin as a replica"
            );
            s.role = Role::Fenced;
            let p = Persisted { term, primary };
            if write_state(&self.state_path, &p).is_ok() {
                s.persisted = p;
            }
        }
    }

    // ---- primary side -------------------------------------------------

    /// Registers a connected replica; returns its session number.
    pub fn replica_connected(&self, id: u16, broker_addr: String, http_addr: String) -> u64 {
        let session = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let mut r = lock(&self.replicas);
        let info = r.entry(id).or_default();
        if !info.connected {
            self.connected.fetch_add(1, Ordering::AcqRel);
        }
        info.connected = true;
        info.broker_addr = broker_addr;
        info.http_addr = http_addr;
        info.session = session;
        session
    }

    pub fn replica_gone(&self, id: u16, session: u64) {
        let mut r = lock(&self.replicas);
        if let Some(info) = r.get_mut(&id) {
            if info.session == session && info.connected {
                info.connected = false;
                self.connected.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// A replica confirmed `written` (in its log) and `durable` (under its
    /// flush mode).
    pub fn replica_ack(&self, id: u16, written: u64, durable: u64) {
        {
            let mut r = lock(&self.replicas);
            if let Some(info) = r.get_mut(&id) {
                info.written = written;
                info.durable = durable;
                info.last_ack_ms = crate::time::now_ms();
            }
        }
        self.replicated.send_if_modified(|v| {
            if durable > *v {
                *v = durable;
                true
            } else {
                false
            }
        });
    }

    pub fn replicas(&self) -> BTreeMap<u16, ReplicaInfo> {
        lock(&self.replicas).clone()
    }

    pub fn connected_replicas(&self) -> usize {
        self.connected.load(Ordering::Acquire)
    }

    /// Highest position some replica confirmed (primary).
    pub fn replicated(&self) -> u64 {
        *self.replicated.borrow()
    }

    /// Sync replication: waits until a replica confirmed `end`.
    pub async fn wait_replicated(&self, end: u64) -> SendStatus {
        let mut rx = self.replicated.subscribe();
        if *rx.borrow() >= end {
            return SendStatus::SendOk;
        }
        if self.connected_replicas() == 0 {
            return SendStatus::SlaveNotAvailable;
        }
        let reached = async move { rx.wait_for(|v| *v >= end).await.is_ok() };
        match tokio::time::timeout(self.replica_timeout, reached).await {
            Ok(true) => SendStatus::SendOk,
            _ => SendStatus::FlushSlaveTimeout,
        }
    }

    // ---- replica side -------------------------------------------------

    pub fn set_confirmed(&self, pos: u64) {
        lock(&self.state).confirmed = pos;
    }

    pub fn confirmed(&self) -> u64 {
        lock(&self.state).confirmed
    }
}

/// Writes the state file atomically and durably.
fn write_state(path: &Path, p: &Persisted) -> Result<(), ReplicationError> {
    let err = |source| ReplicationError::State {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(p).map_err(|e| err(std::io::Error::other(e)))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}
