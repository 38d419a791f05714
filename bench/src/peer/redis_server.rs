//! A private Redis that fsyncs every write: `--vs redis://…` when the
//! server there does not (or with `--peer-sync always`).
//!
//! The Redis a machine runs may keep nothing on disk (this project's CI
//! machines run it that way), and changing a shared server's persistence
//! is not the bench's business. So for the always-sync comparison the bench
//! starts its own `redis-server` (Debian's package, or `--redis-server
//! PATH`) with `appendonly yes`, `appendfsync always` and no RDB snapshots,
//! listening on a free 127.0.0.1 port with its AOF in a temp dir on the
//! same disk as Waybill's temp dirs, and kills it afterwards
//! ([`LocalRedis`] kills it on drop too). `--vs`'s address is then not
//! used, and the report says why.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// How long a fresh redis-server gets to answer PING: well under a second
/// normally; the rest is for a loaded two-core CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The `redis-server` to run: `explicit`, else the one on `PATH`.
pub fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--redis-server {}: no such file", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .context("no redis-server on PATH for --peer-sync always (Debian: apt-get install redis-server, or --redis-server PATH)")
}

/// A private always-fsync redis-server; killed on drop.
pub struct LocalRedis {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl LocalRedis {
    pub async fn start(bin: &Path) -> anyhow::Result<LocalRedis> {
        let dir = tempfile::Builder::new()
            .prefix("waybill-bench-redis-")
            .tempdir()
            .context("cannot create a temp dir for redis-server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port for redis-server")?
            .port();
        let log = dir.path().join("redis.log");
        let child = Command::new(bin)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args([
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let url = format!("redis://127.0.0.1:{port}");
        let mut local = LocalRedis { child, url, _dir: dir };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = local.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("redis-server exited at start ({status}); its log:\n{text}");
            }
            if super::redis::sync_mode(&local.url).await.is_ok() {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("redis-server did not answer within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(local)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
