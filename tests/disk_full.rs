//! A full disk: refused, named, and over by itself when space returns.
//!
//! Contract: below `--disk-reserve-mb` of free space the store refuses
//! appends before any position is handed out (HTTP 507 / wire
//! `Unavailable`, "no space left on device (ENOSPC)"), keeps serving reads,
//! and accepts writes again by itself once space is freed — no restart, and
//! nothing acknowledged is lost. Below `--disk-warn-mb` health says `low`
//! and the `disk_space` alert fires first. A node starts on a full disk.
//!
//! In-process on the fault file system (a disk of a set size), and with the
//! real binary on a real, small tmpfs mounted for the test (needs root, as
//! CI and the dev machines have).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Node;
use waybill::broker::{Broker, BrokerError, BrokerOptions, MessageId, Outgoing, SendStatus};
use waybill::storage::faultfs::{FaultFs, PowerLoss};
use waybill::storage::{Flush, StorageError, Store, StoreOptions};

fn options() -> StoreOptions {
    let mut o = StoreOptions::new("/data", Flush::Sync);
    o.segment_bytes = 64 * 1024;
    o.reserve_bytes = 16 * 1024;
    o.warn_bytes = 64 * 1024;
    o
}

fn msg(i: usize) -> Outgoing {
    Outgoing {
        topic: "full".into(),
        key: Some(format!("k{i}")),
        body: format!("m{i}-{}", "d".repeat(500)).into_bytes(),
        ..Outgoing::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_disk_that_fills_up_writes_are_refused_cleanly_and_resume_when_space_returns() -> anyhow::Result<()> {
    let fs = FaultFs::new();
    let store = Arc::new(Store::open(Arc::new(fs.clone()), options())?);
    let broker = Broker::new(store.clone(), BrokerOptions::default())?;
    // A disk with 300 KiB left.
    fs.set_capacity(Some(fs.used() + 300 * 1024));
    let mut acked: Vec<(MessageId, Vec<u8>)> = Vec::new();
    let mut i = 0;
    let refused = loop {
        let m = msg(i);
        let body = m.body.clone();
        i += 1;
        match broker.send(m).await {
            Ok(r) => {
                assert_eq!(r.status, SendStatus::SendOk, "a send the gate let through is durable");
                acked.push((r.id, body));
            }
            Err(e) => break e,
        }
        anyhow::ensure!(i < 10_000, "never refused");
    };
    println!("refused after {} acknowledged sends: {refused}", acked.len());
    assert!(
        matches!(refused, BrokerError::Storage(StorageError::NoSpace { .. })),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("ENOSPC"), "{refused}");
    assert!(store.failure().is_none(), "a refused write must not fail the store");
    assert_eq!(store.disk().state, waybill::storage::space::DiskState::Full);
    // Reads go on.
    for (id, body) in &acked {
        assert_eq!(broker.get(id)?.map(|m| m.body).as_ref(), Some(body));
    }
    // Space returns: writes succeed again without a restart (within the
    // gate's re-measure period).
    fs.set_capacity(None);
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        match broker.send(msg(i)).await {
            Ok(r) => break r,
            Err(e) => anyhow::ensure!(Instant::now() < deadline, "writes did not resume: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.status, SendStatus::SendOk);
    acked.push((r.id, msg(i).body));
    // Nothing acknowledged is lost, even to a power loss right now.
    fs.power_loss(PowerLoss::DropUnsynced);
    drop(broker);
    drop(store);
    let store = Arc::new(Store::open(Arc::new(fs.reboot()), options())?);
    let broker = Broker::new(store, BrokerOptions::default())?;
    for (id, body) in &acked {
        assert_eq!(broker.get(id)?.map(|m| m.body).as_ref(), Some(body), "{id} lost");
    }
    Ok(())
}

#[test]
fn given_enospc_on_a_log_write_the_failure_names_it() -> anyhow::Result<()> {
    // The gate measures free space every `space_refresh` (100 ms); a disk
    // filled by someone else in between makes the write itself fail. The
    // store then fails (a write cannot be taken back once its position is
    // out) and says why: ENOSPC, a log write, not an fsync.
    let fs = FaultFs::new();
    let mut o = options();
    o.reserve_bytes = 0;
    o.space_refresh = Duration::from_secs(3600);
    o.flush = Flush::Async {
        interval: Duration::from_secs(3600),
    };
    let store = Store::open(Arc::new(fs.clone()), o)?;
    store.append(waybill::storage::NewMessage {
        topic: "full".into(),
        body: vec![1; 100],
        ..Default::default()
    })?;
    fs.set_capacity(Some(fs.used()));
    let err = store
        .append(waybill::storage::NewMessage {
            topic: "full".into(),
            body: vec![2; 100],
            ..Default::default()
        })
        .err()
        .ok_or_else(|| anyhow::anyhow!("a write past the disk's end succeeded"))?;
    let why = store.failure().unwrap_or_default();
    println!("{err} / {why}");
    assert!(why.contains("ENOSPC") && why.contains("log write"), "{why}");
    assert!(!why.contains("fsync"), "{why}");
    Ok(())
}

// ---------------------------------------------------------------------------
// The real binary on a real full disk.
// ---------------------------------------------------------------------------

/// A tmpfs of `mb` MiB mounted at a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mb: u64) -> anyhow::Result<Tmpfs> {
        let parent = tempfile::tempdir()?;
        let dir = parent.path().join("disk");
        std::fs::create_dir_all(&dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Tmpfs { dir, _parent: parent })
    }

    /// Writes a filler file until the disk is full (ENOSPC).
    fn fill(&self, name: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join(name))?;
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Page-sized leftovers.
        loop {
            match f.write_all(&chunk[..512]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

async fn post(node: &Node, i: usize) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/topics/full/messages", node.http))
        .json(&serde_json::json!({"key": format!("k{i}"), "body": format!("message {i} {}", "x".repeat(900))}))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

fn body_of(i: usize) -> String {
    format!("message {i} {}", "x".repeat(900))
}

async fn health(node: &Node) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::get(format!("{}/healthz", node.http)).await?.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_real_binary_on_a_full_tmpfs_it_starts_serves_reads_refuses_writes_and_resumes_when_space_returns(
) -> anyhow::Result<()> {
    let disk = Tmpfs::mount(24)?;
    let data = disk.dir.join("data");
    std::fs::create_dir_all(&data)?;
    let args = [
        "--disk-reserve-mb",
        "2",
        "--disk-warn-mb",
        "6",
        "--segment-bytes",
        "1048576",
    ];
    let mut node = Node::start(&data, &args)?;
    let mut acked: Vec<(String, usize)> = Vec::new();
    for i in 0..20 {
        let (code, v) = post(&node, i).await?;
        assert_eq!((code, v["status"].as_str()), (200, Some("SEND_OK")), "{v}");
        acked.push((v["id"].as_str().unwrap_or_default().to_string(), i));
    }
    assert_eq!(health(&node).await?["disk"]["state"], "ok");

    // Leave ~4 MiB: below the warning mark, above the reserve.
    disk.fill("filler-a")?;
    std::fs::remove_file(disk.dir.join("filler-a"))?;
    let avail = disk_free(&disk.dir)?;
    let keep = avail.saturating_sub(4 << 20);
    write_file(&disk.dir.join("filler-b"), keep)?;
    let h = health(&node).await?;
    println!("disk low: {h}");
    assert_eq!(h["disk"]["state"], "low", "{h}");
    assert_eq!(h["status"], "degraded");
    // Writes go on until the reserve, then are refused with a clear status.
    let mut i = 20;
    let refusal = loop {
        let (code, v) = post(&node, i).await?;
        if code != 200 {
            break (code, v);
        }
        assert_eq!(v["status"], "SEND_OK", "{v}");
        acked.push((v["id"].as_str().unwrap_or_default().to_string(), i));
        i += 1;
        anyhow::ensure!(i < 20_000, "never refused");
    };
    println!(
        "refused after {} acknowledged: {} {}",
        acked.len(),
        refusal.0,
        refusal.1
    );
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert!(
        refusal.1["error"].as_str().unwrap_or_default().contains("ENOSPC"),
        "{}",
        refusal.1
    );
    let h = health(&node).await?;
    assert_eq!(h["disk"]["state"], "full", "{h}");
    let alerts = common::get_json(format!("{}/api/v1/alerts", node.http)).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut alerts = alerts;
    while !alerts.to_string().contains("disk_space") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        alerts = common::get_json(format!("{}/api/v1/alerts", node.http)).await?;
    }
    assert!(alerts.to_string().contains("disk_space"), "{alerts}");

    // Restart on the full disk (filled to the last byte): it starts and
    // serves reads; writes are refused.
    node.sigkill()?;
    disk.fill("filler-c")?;
    let node = Node::start(&data, &args)?;
    for (id, i) in &acked {
        let v = common::get_json(format!("{}/api/v1/messages/{id}", node.http)).await?;
        assert_eq!(
            v["body"].as_str(),
            Some(body_of(*i).as_str()),
            "{id} after restart on a full disk"
        );
    }
    let (code, v) = post(&node, i).await?;
    assert_eq!(code, 507, "{v}");

    // Space returns: writes resume by themselves.
    for f in ["filler-b", "filler-c"] {
        std::fs::remove_file(disk.dir.join(f))?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, v) = post(&node, i).await?;
        if code == 200 {
            assert_eq!(v["status"], "SEND_OK");
            acked.push((v["id"].as_str().unwrap_or_default().to_string(), i));
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "writes did not resume: {code} {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health(&node).await?["disk"]["state"], "ok");
    // Nothing acknowledged was lost.
    drop(node);
    let node = Node::start(&data, &args)?;
    for (id, i) in &acked {
        let v = common::get_json(format!("{}/api/v1/messages/{id}", node.http)).await?;
        assert_eq!(v["body"].as_str(), Some(body_of(*i).as_str()), "{id} lost");
    }
    println!(
        "acknowledged {}, all present after the disk filled and emptied",
        acked.len()
    );
    Ok(())
}

fn disk_free(dir: &Path) -> anyhow::Result<u64> {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("df: {text}"))
}

fn write_file(path: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}
