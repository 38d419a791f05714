//! Shared helpers for the black-box tests: start the real `waybill` binary
//! in a temp dir, wait for its ready line, kill it for real.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a node gets to recover and print its ready line; generous
/// because CI machines have two cores and recovery scans the whole log.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A `waybill serve` child process; SIGKILLed on drop so a failing test
/// never leaves a node running.
pub struct Node {
    pub child: Child,
    pub http: String,
    /// Client protocol address (`host:port`).
    pub broker: String,
    pub data_dir: PathBuf,
}

impl Node {
    /// Starts `waybill serve --data-dir DIR --http-addr 127.0.0.1:0 EXTRA...`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Node> {
        Node::start_at(data_dir, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    /// Like [`Node::start`] on fixed addresses (cluster members must know
    /// each other's broker address before they start).
    pub fn start_at(data_dir: &Path, http: &str, broker: &str, extra: &[&str]) -> anyhow::Result<Node> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_waybill"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", http, "--broker-addr", broker])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .map(str::to_string)
                };
                if let (Some(http), Some(broker)) = (field("http="), field("broker=")) {
                    let _ = tx.send((http, broker));
                }
            }
        });
        let (http, broker) = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
                anyhow::bail!("node did not become ready; its log:\n{log}");
            }
        };
        Ok(Node {
            child,
            http: format!("http://{http}"),
            broker,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Sends a signal by name (`STOP`, `CONT`, …) with kill(1).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -{sig} failed");
        Ok(())
    }

    /// SIGKILL: no flush, no checkpoint, no goodbye.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A body that differs per message, has multi-byte UTF-8 and varies in size.
pub fn body_for(producer: usize, seq: usize) -> String {
    let pad = (producer * 7919 + seq * 104_729) % 1500;
    format!("p{producer}-m{seq}-ünïcødé-{}", "x".repeat(pad))
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// A node's whole commit log: its segment files concatenated in order.
pub fn log_bytes(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(data_dir.join("log"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        out.extend(std::fs::read(n)?);
    }
    Ok(out)
}

/// `GET url` as JSON.
pub async fn get_json(url: String) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::get(url).await?.json().await?)
}

/// A group's dead letters (`GET /api/v1/dlq?group=G`, the whole list).
pub async fn dead_letters(node: &Node, group: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let v = get_json(format!("{}/api/v1/dlq?group={group}", node.http)).await?;
    Ok(v["messages"].as_array().cloned().unwrap_or_default())
}

/// Polls a message's timeline until `done` holds (the tracer writes in
/// batches, off the hot path); fails after 15 s with the last answer.
pub async fn timeline_until(
    node: &Node,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let start = std::time::Instant::now();
    loop {
        let v = get_json(format!("{}/api/v1/messages/{id}", node.http)).await?;
        if done(&v) {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "timeline never completed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node's start-up audit has run: the tracer connects and
/// audits in the background, after the node is already serving.
pub async fn audit_done(node: &Node) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let h = get_json(format!("{}/healthz", node.http)).await?;
        if h["tracer"]["audit"] == "done" {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "start-up audit never finished: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// xorshift64*: a reproducible random stream for property and fuzz tests,
/// with no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A fresh schema in PostgreSQL's `test` database, so tests run in
/// parallel; returns a URL whose connections use it.
pub async fn pg_schema(prefix: &str) -> anyhow::Result<String> {
    sqlx::any::install_default_drivers();
    anyhow::ensure!(prefix.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos()
    );
    let pool = sqlx::AnyPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    // The name is a checked prefix and digits: safe to splice.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&pool)
        .await?;
    Ok(format!(
        "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{name}"
    ))
}

/// Polls `done` every 100 ms until it holds; fails naming `what` after
/// `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("timed out after {limit:?} waiting for {what}")
}
