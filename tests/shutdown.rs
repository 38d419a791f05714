//! Graceful shutdown of the real binary, under load, with a live feed open.
//!
//! Contract: on SIGTERM the node stops accepting, ends every live-feed
//! stream at once, lets the sends in flight get their answer (an ack only
//! for what is durable), then flushes, syncs the indexes, checkpoints and
//! writes the clean-shutdown marker; the next start trusts the marker and
//! does no recovery scan. Oracle: acknowledged ⇒ present byte-identical
//! after the restart; unanswered ⇒ unknown.
//!
//! What is asserted, with [`PRODUCERS`] producers keeping
//! [`PRODUCERS`] × [`IN_FLIGHT`] sync-flush sends in flight over the client
//! protocol and one `/api/v1/events` stream open over real TCP:
//! - the live-feed connection is closed by the node within [`FEED_CLOSED`]
//!   of the signal;
//! - the process exits, status 0, within [`EXIT_WITHIN`] of the signal (the
//!   drain starts at the signal; its own bound is 3 s, `DRAIN_TIMEOUT`, so
//!   this also says the drain finished well before its deadline);
//! - every acknowledged message is present after the restart, byte-identical;
//! - the restart did no recovery scan (`/healthz` `recovery`, the metric,
//!   the log line), and a full scan of a copy of the same files (marker
//!   left out) finds no torn or corrupt record and the same log end.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{body_for, get_json, Node};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waybill_client::{Message, Producer, ProducerOptions, SendStatus};

/// Producers, each with its own connection.
const PRODUCERS: usize = 8;
/// Sync sends each producer keeps in flight.
const IN_FLIGHT: usize = 32;
/// Acknowledged sends before the signal: the load is well under way.
const SIGNAL_AFTER_ACKS: usize = 3000;
/// From the signal to the process's exit.
const EXIT_WITHIN: Duration = Duration::from_secs(2);
/// From the signal to the node closing the live-feed connection.
const FEED_CLOSED: Duration = Duration::from_secs(1);

type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// Opens `/api/v1/events` over a raw TCP connection and waits for the
/// first event, so the stream is really live.
async fn open_live_feed(http: &str) -> anyhow::Result<TcpStream> {
    let addr = http.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event:") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "live feed closed before its first event");
        seen.extend_from_slice(&buf[..n]);
    }
    anyhow::ensure!(
        String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"),
        "live feed: {}",
        String::from_utf8_lossy(&seen)
    );
    Ok(s)
}

/// Keeps [`IN_FLIGHT`] sends going on one producer until `stop` or until
/// the broker is gone; records what was acknowledged.
async fn produce(p: usize, broker: String, acked: Acked, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let producer = Arc::new(Producer::new(ProducerOptions::new(broker))?);
    let mut workers = Vec::new();
    for w in 0..IN_FLIGHT {
        let (producer, acked, stop) = (producer.clone(), acked.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            for seq in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let body = body_for(p, seq * IN_FLIGHT + w);
                let msg = Message {
                    key: Some(format!("k-{p}-{w}-{seq}")),
                    body: body.clone().into_bytes(),
                    ..Message::default()
                };
                match producer.send("shutdown", msg).await {
                    Ok(r) if r.status == SendStatus::SendOk => {
                        if let Ok(mut a) = acked.lock() {
                            a.push((r.id, body));
                        }
                    }
                    // Not acknowledged: unknown, and not this test's business.
                    Ok(_) => {}
                    // The node went away: this worker is done.
                    Err(_) => return,
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    Ok(())
}

fn acked_count(acked: &Acked) -> usize {
    acked.lock().map(|a| a.len()).unwrap_or(0)
}

/// Copies the engine's files (not the marker, not the trace store).
fn copy_engine_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let target = to.join(e.file_name());
            if e.file_type()?.is_dir() {
                copy_dir(&e.path(), &target)?;
            } else {
                std::fs::copy(e.path(), target)?;
            }
        }
        Ok(())
    }
    copy_dir(&from.join("log"), &to.join("log"))?;
    copy_dir(&from.join("index"), &to.join("index"))?;
    std::fs::copy(from.join("checkpoint"), to.join("checkpoint"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_load_and_an_open_live_feed_when_sigterm_should_drain_exit_fast_and_restart_without_a_scan(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    // Small segments so the run rolls several of them.
    let args = ["--flush", "sync", "--segment-bytes", "1048576"];
    let mut node = Node::start(&dir, &args)?;

    println!("--- open a live feed and start {PRODUCERS} producers");
    let mut feed = open_live_feed(&node.http).await?;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(produce(p, node.broker.clone(), acked.clone(), stop.clone())))
        .collect();
    let start = Instant::now();
    while acked_count(&acked) < SIGNAL_AFTER_ACKS {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "load never got going");
        anyhow::ensure!(!producers.iter().all(|p| p.is_finished()), "producers stopped early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let feed_task = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match feed.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    });

    println!("--- SIGTERM pid {} with sends in flight", node.child.id());
    let at_signal = acked_count(&acked);
    let signalled = Instant::now();
    node.signal("TERM")?;
    let status = loop {
        if let Some(s) = node.child.try_wait()? {
            break s;
        }
        anyhow::ensure!(
            signalled.elapsed() < Duration::from_secs(30),
            "node still running 30 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let exited = signalled.elapsed();
    let feed_closed = tokio::time::timeout(Duration::from_secs(5), feed_task).await??;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await??;
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let log = std::fs::read_to_string(dir.with_extension("log"))?;
    println!(
        "exit {exited:?} after SIGTERM (status {status}); live feed closed after {:?}; acknowledged {} ({} before the signal)",
        feed_closed.duration_since(signalled),
        acked.len(),
        at_signal
    );
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(exited < EXIT_WITHIN, "exit took {exited:?}; log:\n{log}");
    assert!(
        feed_closed.duration_since(signalled) < FEED_CLOSED,
        "the live feed held on"
    );
    assert!(
        log.contains("store closed cleanly"),
        "no clean close in the log:\n{log}"
    );
    assert!(dir.join("clean-shutdown").is_file(), "no clean-shutdown marker");

    // The same files, scanned in full by a second node: nothing torn.
    let copy = tmp.path().join("copy");
    copy_engine_files(&dir, &copy)?;

    println!("--- restart on the same data dir");
    let node = Node::start(&dir, &args)?;
    let health = get_json(format!("{}/healthz", node.http)).await?;
    assert_eq!(health["recovery"]["scanned"], false, "{health}");
    assert_eq!(health["damage"], serde_json::json!([]), "{health}");
    assert!(!dir.join("clean-shutdown").exists(), "the marker must go at open");
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await?.text().await?;
    assert!(metrics.contains("waybill_storage_recovery_scanned 0"));
    let log = std::fs::read_to_string(dir.with_extension("log"))?;
    assert!(log.contains("clean shutdown: no recovery scan"));

    let client = reqwest::Client::new();
    let mut missing = Vec::new();
    for (id, body) in &acked {
        let resp = client.get(format!("{}/api/v1/messages/{id}", node.http)).send().await?;
        if resp.status() != 200 {
            missing.push(id.clone());
            continue;
        }
        let v: Value = resp.json().await?;
        assert_eq!(v["body"].as_str(), Some(body.as_str()), "message {id} changed");
    }
    assert!(
        missing.is_empty(),
        "acknowledged but missing after restart: {missing:?}"
    );

    println!("--- a full scan of the same files finds nothing torn");
    let scanned = Node::start(&copy, &["--trace-db", "none"])?;
    let h = get_json(format!("{}/healthz", scanned.http)).await?;
    assert_eq!(h["recovery"]["scanned"], true, "{h}");
    assert_eq!(h["damage"], serde_json::json!([]), "torn or corrupt records: {h}");
    assert_eq!(
        h["log_end"], health["log_end"],
        "scan and marker disagree on the log end"
    );
    println!(
        "restart without a scan: log end {}, {} acknowledged messages all present",
        health["log_end"],
        acked.len()
    );
    Ok(())
}
