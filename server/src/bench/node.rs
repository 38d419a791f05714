//! The node the bench measures: its own child process, and the node's
//! fsync counters read over HTTP.
//!
//! Without `--broker` the bench starts the current executable as
//! `EXE serve --data-dir TMP/data --http-addr 127.0.0.1:0
//! --broker-addr 127.0.0.1:0 --flush MODE` (a real process, as users run
//! it: `waybill serve`, or `waybill-bench serve` with the same flags), waits for its `waybill ready http=… broker=…` line, and kills it at
//! the end; the temp dir (data, the node's log, the probe file) goes with
//! the [`OwnNode`]. A node that exits or stays silent fails the bench with
//! its log.
//!
//! Fsync figures come from `GET /metrics` before and after the run:
//! `waybill_fsync_seconds_count` (one per group commit) and
//! `waybill_messages_flushed_total` (messages those fsyncs covered).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::BenchError;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a fresh node gets to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A `waybill serve` child in a temp dir; killed on drop.
pub struct OwnNode {
    child: Child,
    pub http: String,
    pub broker: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnNode {
    /// Starts a node with `--flush flush` (`sync` or `async`) and, when
    /// given, `--trace-db trace_db` (e.g. `none` to measure without tracing).
    pub async fn start(flush: &str, trace_db: Option<&str>) -> Result<OwnNode, BenchError> {
        OwnNode::start_with(flush, trace_db, "127.0.0.1:0", "127.0.0.1:0", &[]).await
    }

    /// Like [`OwnNode::start`] on given addresses with extra `serve` flags.
    pub async fn start_with(
        flush: &str,
        trace_db: Option<&str>,
        http: &str,
        broker: &str,
        extra: &[String],
    ) -> Result<OwnNode, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("waybill-bench-")
            .tempdir()
            .map_err(BenchError::io("cannot create a temp dir for the node"))?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("node.log");
        let exe = std::env::current_exe().map_err(BenchError::io("cannot find the waybill executable"))?;
        let log_file =
            std::fs::File::create(&log).map_err(BenchError::io(format!("cannot create {}", log.display())))?;
        let args: Vec<std::ffi::OsString> = ["--data-dir".into(), data_dir.into_os_string()]
            .into_iter()
            .chain(["--http-addr", http, "--broker-addr", broker, "--flush", flush].map(Into::into))
            .chain(
                trace_db
                    .map(|t| ["--trace-db", t])
                    .into_iter()
                    .flatten()
                    .map(Into::into),
            )
            .chain(extra.iter().map(Into::into))
            .collect();
        let (child, line) = match spawn_serve(&exe, &args, log_file, READY_TIMEOUT).await {
            Ok(ready) => ready,
            Err(NotReady::Spawn(source)) => {
                return Err(BenchError::Io {
                    what: format!("cannot start {} serve", exe.display()),
                    source,
                })
            }
            Err(why) => return Err(BenchError::Node(format!("{why}; its log:\n{}", read_log(&log)))),
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
                .ok_or_else(|| BenchError::Node(format!("no {name} in the node's ready line {line:?}")))
        };
        Ok(OwnNode {
            http: field("http=")?,
            broker: field("broker=")?,
            child,
            log,
            _dir: dir,
        })
    }

    /// The node's process id (for its CPU time), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails with the node's log when it is no longer running.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Node(format!(
                "the node exited ({status}); its log:\n{}",
                read_log(&self.log)
            ))),
            Err(source) => Err(BenchError::Io {
                what: "cannot check on the node".into(),
                source,
            }),
        }
    }

    /// Kills the node and waits for it; the temp dir is removed on drop.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Why a `serve` child never said it was ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("cannot start the node: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the node exited before it was ready")]
    Exited,
    #[error("the node was not ready after {0:?}")]
    Silent(Duration),
}

/// Starts `exe serve ARGS` (stderr to `log`, killed on drop), waits up to
/// `timeout` for its `waybill ready …` line and returns the child with that
/// line; stdout keeps being drained so the node never blocks on it. The
/// one way the bench and the matrix start their nodes.
pub async fn spawn_serve(
    exe: &Path,
    args: &[std::ffi::OsString],
    log: std::fs::File,
    timeout: Duration,
) -> Result<(Child, String), NotReady> {
    let mut child = Command::new(exe)
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(NotReady::Spawn)?;
    let stdout = child.stdout.take().ok_or(NotReady::Exited)?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(timeout, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("waybill ready") {
                return Some(line);
            }
        }
        None
    })
    .await;
    let line = match ready {
        Ok(Some(line)) => line,
        Ok(None) => return Err(NotReady::Exited),
        Err(_) => return Err(NotReady::Silent(timeout)),
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, line))
}

/// A loopback address whose port was free a moment ago.
fn free_addr() -> Result<String, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .map_err(BenchError::io("cannot find a free port"))
}

/// Starts `n` nodes on loopback as one replication group (`sync`, `async`
/// or `raft`) and returns them with the index of the node that takes
/// writes (the primary, or the elected Raft leader).
pub async fn start_group(
    flush: &str,
    trace_db: Option<&str>,
    replication: &str,
    n: u16,
) -> Result<(Vec<OwnNode>, usize), BenchError> {
    let addrs: Vec<(String, String)> = (0..n)
        .map(|_| Ok((free_addr()?, free_addr()?)))
        .collect::<Result<_, BenchError>>()?;
    let mut nodes = Vec::new();
    for id in 1..=n {
        let mut extra = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--replication".into(),
            replication.into(),
        ];
        for (pid, (_, pbroker)) in (1..=n).zip(&addrs) {
            if pid != id {
                extra.push("--peer".into());
                extra.push(format!("{pid}={pbroker}"));
            }
        }
        let (http, broker) = &addrs[usize::from(id) - 1];
        nodes.push(OwnNode::start_with(flush, trace_db, http, broker, &extra).await?);
    }
    // The writer: whoever the group calls primary/leader, once replicas
    // are connected (sync replication answers SLAVE_NOT_AVAILABLE before).
    let client = reqwest::Client::new();
    for _ in 0..300 {
        let v: serde_json::Value = match client
            .get(format!("http://{}/api/v1/cluster", nodes[0].http))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let list = v["nodes"].as_array().cloned().unwrap_or_default();
        let writer = list
            .iter()
            .find(|x| x["alive"] == true && (x["role"] == "primary" || x["role"] == "leader"));
        let ready = list
            .iter()
            .filter(|x| x["alive"] == true && (x["role"] == "replica" || x["role"] == "follower"))
            .count()
            == usize::from(n) - 1;
        if let (Some(w), true) = (writer, ready) {
            let id = w["id"].as_u64().unwrap_or(1) as usize;
            return Ok((nodes, id.saturating_sub(1)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BenchError::Node(format!(
        "the {replication} group of {n} did not settle on a writer with all members connected"
    )))
}

fn read_log(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    // The tail is what explains a failure.
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The node's fsync counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsyncCounters {
    pub fsyncs: u64,
    pub synced_msgs: u64,
}

/// `http://host:port` from a bare `host:port` (or a URL as given).
pub fn http_base(http: &str) -> String {
    if http.starts_with("http://") || http.starts_with("https://") {
        http.trim_end_matches('/').to_string()
    } else {
        format!("http://{http}")
    }
}

/// How long one `/metrics` read may take: a node that cannot answer in
/// that time under load fails the bench rather than stalling it.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the fsync counters from `GET {http}/metrics`.
pub async fn scrape(client: &reqwest::Client, http: &str) -> Result<FsyncCounters, BenchError> {
    let url = format!("{}/metrics", http_base(http));
    let unread = |source| BenchError::Http {
        what: format!("cannot read {url}"),
        source: Some(source),
    };
    let resp = client.get(&url).timeout(SCRAPE_TIMEOUT).send().await.map_err(unread)?;
    if !resp.status().is_success() {
        return Err(BenchError::Http {
            what: format!("{url} answered {}", resp.status()),
            source: None,
        });
    }
    let text = resp.text().await.map_err(unread)?;
    parse_metrics(&text).ok_or_else(|| BenchError::Http {
        what: format!("{url} lacks the fsync counters"),
        source: None,
    })
}

fn parse_metrics(text: &str) -> Option<FsyncCounters> {
    let value = |name: &str| {
        text.lines().find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(name))
                .then(|| parts.next().and_then(|v| v.parse::<f64>().ok()))
                .flatten()
        })
    };
    Some(FsyncCounters {
        fsyncs: value("waybill_fsync_seconds_count")? as u64,
        synced_msgs: value("waybill_messages_flushed_total")? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fsync_counters() {
        let text = "# HELP waybill_messages_flushed_total x\nwaybill_messages_flushed_total 5120\n\
                    waybill_fsync_seconds_bucket{le=\"+Inf\"} 20\nwaybill_fsync_seconds_count 20\n";
        let c = parse_metrics(text).map(|c| (c.fsyncs, c.synced_msgs));
        assert_eq!(c, Some((20, 5120)));
        assert!(parse_metrics("nothing here").is_none());
    }

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(http_base("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(http_base("http://h:1/"), "http://h:1");
    }
}
