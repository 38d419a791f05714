//! The cluster one matrix run measures: real `waybill serve` processes on
//! loopback, each with its own data dir (and, outside it, its own SQLite
//! trace store, so a lost data dir leaves the tracer's evidence), linked to
//! each other through [`Proxy`]s so a member can be partitioned.
//!
//! Invariants:
//! - A member keeps its addresses, data dir and trace store across
//!   restarts; only [`Member::wipe`] (primary loss) removes its data.
//! - `replication none` is one member; every other mode is three, node 1
//!   the initial primary (Raft elects).
//! - Every child is killed when the group drops; a tmpfs it mounted is
//!   unmounted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::proxy::Proxy;
use super::{MatrixError, Mode};
use crate::bench::node::{spawn_serve, NotReady};

/// How long a member gets to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the group gets to agree on a writer with every live member connected.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Member {
    pub id: u16,
    pub data_dir: PathBuf,
    pub trace_db: PathBuf,
    pub http: String,
    pub broker: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// `http://host:port` of this member's API.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Starts (or restarts) the process and waits for its ready line.
    pub async fn start(&mut self, exe: &Path) -> Result<(), MatrixError> {
        std::fs::create_dir_all(&self.data_dir).map_err(MatrixError::io("cannot create a member's data dir"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(MatrixError::io("cannot open a member's log"))?;
        let args: Vec<std::ffi::OsString> = self.args.iter().map(Into::into).collect();
        // A member keeps its addresses across restarts (the others know
        // them), and between a kill and the restart another process on this
        // machine may hold the port for a moment (seen once in CI: an
        // ephemeral port). Only that failure is tried again, briefly.
        for _ in 0..PORT_RETRIES {
            let log = log
                .try_clone()
                .map_err(MatrixError::io("cannot share a member's log"))?;
            match spawn_serve(exe, &args, log, READY_TIMEOUT).await {
                Err(NotReady::Exited) if self.log_tail().contains("Address already in use") => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Ok((child, _)) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(why) => return Err(self.not_started(exe, why)),
            }
        }
        match spawn_serve(exe, &args, log, READY_TIMEOUT).await {
            Ok((child, _)) => {
                self.child = Some(child);
                Ok(())
            }
            Err(why) => Err(self.not_started(exe, why)),
        }
    }

    fn not_started(&self, exe: &Path, why: NotReady) -> MatrixError {
        match why {
            NotReady::Spawn(source) => MatrixError::Io {
                what: format!("cannot start {} serve", exe.display()),
                source,
            },
            why => MatrixError::Node(format!(
                "node {} did not start ({why}); its log:\n{}",
                self.id,
                self.log_tail()
            )),
        }
    }

    /// SIGKILL and wait: the process dies with whatever it had not written.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Sends `signal` (a name such as `USR1`, a power cut) to the process
    /// and waits for it to exit.
    pub async fn signal_and_wait(&mut self, signal: &str) -> Result<(), MatrixError> {
        let Some(mut c) = self.child.take() else {
            return Err(MatrixError::Node(format!("node {} is not running", self.id)));
        };
        let pid = c.id().ok_or_else(|| MatrixError::Node("no pid".into()))?;
        // By pid, never a process group (see README's process-safety note).
        let ok = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .await
            .map_err(MatrixError::io("cannot run kill"))?;
        if !ok.success() {
            return Err(MatrixError::Node(format!("kill -s {signal} {pid} failed")));
        }
        match tokio::time::timeout(Duration::from_secs(30), c.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = c.kill().await;
                Err(MatrixError::Node(format!(
                    "node {} did not exit after SIG{signal}; its log:\n{}",
                    self.id,
                    self.log_tail()
                )))
            }
        }
    }

    /// The data dir is gone for good (the trace store, elsewhere, stays).
    pub fn wipe(&self) -> Result<(), MatrixError> {
        match std::fs::remove_dir_all(&self.data_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(MatrixError::Io {
                what: format!("cannot remove {}", self.data_dir.display()),
                source: e,
            }),
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// What a run needs of its group beyond the mode.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Every member on the fault-injecting file system (power loss).
    pub fault_fs: bool,
    /// Node 1's data dir on this (small) tmpfs mount point (disk full).
    pub node1_dir: Option<PathBuf>,
    /// Extra `serve` flags for every member.
    pub extra: Vec<String>,
}

pub struct Group {
    pub mode: Mode,
    pub members: Vec<Member>,
    /// `(from, to, proxy)`: from's link to `to`.
    links: Vec<(u16, u16, Proxy)>,
    exe: PathBuf,
}

/// Restarts tried again when the member's port is held by someone else.
const PORT_RETRIES: usize = 4;

fn free_addr() -> Result<String, MatrixError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .map_err(MatrixError::io("cannot find a free port"))
}

impl Group {
    /// Starts the members in `root` and waits until the group has a writer.
    pub async fn start(mode: Mode, root: &Path, exe: &Path, needs: &Needs) -> Result<Group, MatrixError> {
        let n: u16 = if mode.replication == "none" { 1 } else { 3 };
        let addrs: Vec<(String, String)> = (0..n)
            .map(|_| Ok((free_addr()?, free_addr()?)))
            .collect::<Result<_, MatrixError>>()?;
        let mut links = Vec::new();
        for from in 1..=n {
            for to in 1..=n {
                if from != to {
                    let proxy = Proxy::start(addrs[usize::from(to) - 1].1.clone()).await?;
                    links.push((from, to, proxy));
                }
            }
        }
        let mut members = Vec::new();
        for id in 1..=n {
            let (http, broker) = addrs[usize::from(id) - 1].clone();
            let data_dir = match (&needs.node1_dir, id) {
                (Some(d), 1) => d.join("data"),
                _ => root.join(format!("node{id}")),
            };
            let trace_db = root.join(format!("trace-{id}.db"));
            let mut args: Vec<String> = vec![
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--http-addr".into(),
                http.clone(),
                "--broker-addr".into(),
                broker.clone(),
                "--flush".into(),
                mode.flush.into(),
                "--node-id".into(),
                id.to_string(),
                "--replication".into(),
                mode.replication.into(),
                "--trace-db".into(),
                format!("sqlite://{}", trace_db.display()),
                "--segment-bytes".into(),
                (8u64 << 20).to_string(),
                "--replica-timeout-ms".into(),
                "2000".into(),
                "--ui-dir".into(),
                root.join("no-ui").display().to_string(),
            ];
            for (from, to, p) in &links {
                if *from == id {
                    args.push("--peer".into());
                    args.push(format!("{to}={}", p.addr));
                }
            }
            if needs.fault_fs {
                args.push("--fault-fs".into());
            }
            args.extend(needs.extra.iter().cloned());
            members.push(Member {
                id,
                data_dir,
                trace_db,
                http,
                broker,
                args,
                log: root.join(format!("node{id}.log")),
                child: None,
            });
        }
        let mut group = Group {
            mode,
            members,
            links,
            exe: exe.to_path_buf(),
        };
        for i in 0..group.members.len() {
            let exe = group.exe.clone();
            group.members[i].start(&exe).await?;
        }
        group.settle(&[]).await?;
        Ok(group)
    }

    pub fn member(&mut self, id: u16) -> &mut Member {
        let i = self.members.iter().position(|m| m.id == id).unwrap_or(0);
        &mut self.members[i]
    }

    /// Restarts member `id` (its process must be gone).
    pub async fn restart(&mut self, id: u16) -> Result<(), MatrixError> {
        let exe = self.exe.clone();
        self.member(id).start(&exe).await
    }

    /// Cuts (or heals) every link to and from member `id`.
    pub fn partition(&self, id: u16, cut: bool) {
        for (from, to, p) in &self.links {
            if *from == id || *to == id {
                p.set_cut(cut);
            }
        }
    }

    /// Broker addresses, writer first when known.
    pub fn brokers(&self, writer: Option<u16>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(w) = writer.and_then(|w| self.members.iter().find(|m| m.id == w)) {
            out.push(w.broker.clone());
        }
        for m in &self.members {
            if Some(m.id) != writer {
                out.push(m.broker.clone());
            }
        }
        out
    }

    /// `GET /api/v1/cluster` of member `id`.
    pub async fn status(&self, id: u16) -> Result<Value, MatrixError> {
        let m = self
            .members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| MatrixError::Node(format!("no node {id}")))?;
        get_json(&format!("{}/api/v1/cluster", m.base())).await
    }

    /// Waits until one live member is primary/leader and every other live
    /// member (but those in `away`) follows it; returns the writer's id.
    pub async fn settle(&mut self, away: &[u16]) -> Result<u16, MatrixError> {
        if self.mode.replication == "none" {
            return Ok(1);
        }
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let mut last = Value::Null;
        loop {
            let live: Vec<u16> = self
                .members
                .iter_mut()
                .filter_map(|m| (m.running() && !away.contains(&m.id)).then_some(m.id))
                .collect();
            for id in &live {
                let Ok(v) = self.status(*id).await else { continue };
                let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
                let role = |id: u16| {
                    nodes
                        .iter()
                        .find(|x| x["id"].as_u64() == Some(u64::from(id)))
                        .map(|x| (x["role"].as_str().unwrap_or("").to_string(), x["alive"] == true))
                };
                let writer = live
                    .iter()
                    .copied()
                    .find(|w| role(*w).is_some_and(|(r, alive)| alive && (r == "primary" || r == "leader")));
                let followers_ok = writer.is_some_and(|w| {
                    live.iter()
                        .filter(|x| **x != w)
                        .all(|x| role(*x).is_some_and(|(r, alive)| alive && (r == "replica" || r == "follower")))
                });
                if let (Some(w), true) = (writer, followers_ok) {
                    return Ok(w);
                }
                last = v;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MatrixError::Node(format!(
                    "the {} group did not settle on a writer within {SETTLE_TIMEOUT:?}; last status: {last}",
                    self.mode.replication
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills every member.
    pub async fn stop(&mut self) {
        for m in &mut self.members {
            m.kill().await;
        }
    }
}

/// GET `url` as JSON; a non-2xx answer is an error naming it.
pub async fn get_json(url: &str) -> Result<Value, MatrixError> {
    call(reqwest::Method::GET, url, Duration::from_secs(5)).await
}

/// POST to `url` (no body) as JSON.
pub async fn post_json(url: &str) -> Result<Value, MatrixError> {
    call(reqwest::Method::POST, url, Duration::from_secs(10)).await
}

async fn call(method: reqwest::Method, url: &str, timeout: Duration) -> Result<Value, MatrixError> {
    let what = format!("{method} {url}");
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(MatrixError::http("cannot build an HTTP client"))?;
    let resp = client
        .request(method, url)
        .send()
        .await
        .map_err(MatrixError::http(what.clone()))?;
    let status = resp.status();
    let v: Value = match resp.json().await {
        Ok(v) => v,
        Err(e) if status.is_success() => return Err(MatrixError::http(format!("{what}: not JSON"))(e)),
        Err(_) => Value::Null,
    };
    if !status.is_success() {
        return Err(MatrixError::Node(format!("{what}: {status} {v}")));
    }
    Ok(v)
}
