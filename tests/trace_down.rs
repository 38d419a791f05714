//! The broker never waits on its tracer, black box.
//!
//! Contract: with the trace store unreachable (closed port), slow (a server
//! that accepts and never answers) or unwritable (a SQLite path that cannot
//! be created), `waybill serve` is ready at once — not after a connect or
//! pool timeout — produces and consumes, keeps `/healthz` at 200 with a
//! `tracer` detail, and sheds trace events past its queue bound with gap
//! markers, counted in `/metrics`. When the store becomes available the
//! tracer connects (retrying with backoff), runs the start-up audit and
//! writes what it queued, plus a gap row for what it shed.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{get_json, timeline_until, Node};
use serde_json::Value;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus};

/// The tracer's bound in these tests: small, so a few sends overflow it.
const QUEUE: &str = "20";
/// Sends per case: the first 20 queue, the rest are shed.
const SENDS: usize = 40;
/// Longest start we accept; the old start waited for sqlx's 30 s pool
/// timeout. Generous for a loaded two-core machine; the real figure is
/// printed.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Sends `SENDS` sync messages; all must be `SEND_OK`.
async fn produce(node: &Node, topic: &str) -> anyhow::Result<Vec<String>> {
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut ids = Vec::new();
    for i in 0..SENDS {
        let r = producer
            .send(
                topic,
                Message {
                    key: Some(format!("{topic}-{i}")),
                    body: format!("message {i}").into_bytes(),
                    ..Message::default()
                },
            )
            .await?;
        assert_eq!(r.status, SendStatus::SendOk, "send {i}");
        ids.push(r.id);
    }
    Ok(ids)
}

/// Consumes `SENDS` messages of `topic` with a fresh group.
async fn consume(node: &Node, topic: &str) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut o = ConsumerOptions::new(node.broker.clone(), "readers", topic);
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    let consumer = PushConsumer::start(o, move |m| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(m.id.clone());
            ConsumeResult::Success
        }
    })
    .await?;
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < SENDS {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(id)) => {
                seen.insert(id);
            }
            _ => anyhow::bail!("consumed {} of {SENDS}", seen.len()),
        }
    }
    consumer.shutdown().await;
    Ok(())
}

/// `GET /healthz`, which must stay 200.
async fn health(node: &Node) -> anyhow::Result<Value> {
    let resp = reqwest::get(format!("{}/healthz", node.http)).await?;
    anyhow::ensure!(resp.status() == 200, "/healthz answered {}", resp.status());
    Ok(resp.json().await?)
}

/// A sample of `/metrics` by its full name (labels included).
async fn metric(node: &Node, name: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", node.http)).await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {name} in /metrics"))
}

/// A loopback server that accepts connections and never answers.
fn silent_server() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?.to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_unreachable_slow_or_unwritable_trace_store_the_node_starts_at_once_serves_and_sheds(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, b"a file where the trace store's folder should be")?;
    let cases = [
        ("closed port", "postgres://postgres@127.0.0.1:1/x".to_string(), "async"),
        (
            "silent server",
            format!("postgres://postgres@{}/x", silent_server()?),
            "sync",
        ),
        (
            "unwritable SQLite path",
            format!("sqlite://{}/trace.db", blocker.display()),
            "sync",
        ),
    ];
    for (i, (name, url, flush)) in cases.iter().enumerate() {
        println!("--- trace store: {name} ({url}), --flush {flush}");
        let started = Instant::now();
        let node = Node::start(
            &tmp.path().join(format!("node{i}")),
            &["--trace-db", url, "--trace-queue-messages", QUEUE, "--flush", flush],
        )?;
        let ready = started.elapsed();
        println!("ready in {ready:?}");
        assert!(ready < START_LIMIT, "{name}: start took {ready:?}");
        let h = health(&node).await?;
        println!("healthz tracer at start: {}", h["tracer"]);
        produce(&node, "down").await?;
        consume(&node, "down").await?;
        let h = health(&node).await?;
        println!("healthz after {SENDS} sends: {h}");
        assert_eq!(h["status"], "ok", "{name}: the broker is healthy");
        let state = h["tracer"]["state"].as_str().unwrap_or_default();
        assert!(["connecting", "down"].contains(&state), "{name}: tracer {state}");
        assert!(
            h["tracer"]["shed_events"].as_u64().unwrap_or(0) >= (SENDS - 20) as u64,
            "{name}: sends past the bound are shed: {h}"
        );
        assert!(metric(&node, "waybill_trace_shed_total").await? >= (SENDS - 20) as f64);
        assert_eq!(metric(&node, "waybill_trace_state{state=\"ok\"}").await?, 0.0);
        assert_eq!(
            metric(&node, &format!("waybill_trace_state{{state=\"{state}\"}}")).await?,
            1.0
        );
        // The losses view says why it has nothing yet, rather than failing.
        let losses = get_json(format!("{}/api/v1/losses", node.http)).await?;
        assert_eq!(losses["windows"], serde_json::json!([]));
        assert!(losses["tracer"]["state"].is_string(), "{losses}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_trace_store_that_comes_back_the_tracer_connects_audits_and_catches_up_with_a_gap() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let folder = tmp.path().join("traces");
    std::fs::write(&folder, b"not yet a folder")?;
    let url = format!("sqlite://{}/trace.db", folder.display());
    let node = Node::start(
        &tmp.path().join("node"),
        &["--trace-db", &url, "--trace-queue-messages", QUEUE],
    )?;
    let ids = produce(&node, "back").await?;
    let h = health(&node).await?;
    println!("trace store away: {}", h["tracer"]);
    assert_eq!(h["tracer"]["state"], "down");
    assert!(h["tracer"]["error"].as_str().is_some_and(|e| !e.is_empty()));

    println!("--- the trace store becomes available");
    std::fs::remove_file(&folder)?;
    std::fs::create_dir(&folder)?;
    let begun = Instant::now();
    let h = loop {
        let h = health(&node).await?;
        if h["tracer"]["state"] == "ok" && h["tracer"]["audit"] == "done" && h["tracer"]["queue_depth"] == 0 {
            break h;
        }
        anyhow::ensure!(begun.elapsed() < Duration::from_secs(30), "tracer never caught up: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("caught up in {:?}: {}", begun.elapsed(), h["tracer"]);
    // What was queued is traced; what was shed is in the log, with a gap.
    let first = timeline_until(&node, &ids[0], |v| v["traced"] == true).await?;
    assert_eq!(first["status"], "stored");
    let last = get_json(format!("{}/api/v1/messages/{}", node.http, ids[SENDS - 1])).await?;
    assert_eq!(last["traced"], false, "{last}");
    let gaps = last["gaps"].as_array().cloned().unwrap_or_default();
    println!("a shed message: gaps {gaps:?}");
    assert!(
        gaps.iter()
            .any(|g| g["messages"].as_u64().unwrap_or(0) >= (SENDS - 20) as u64),
        "the shed sends are counted in a gap row: {last}"
    );
    // New sends are traced as usual.
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let after = producer.send("back", Message::default()).await?;
    timeline_until(&node, &after.id, |v| v["traced"] == true).await?;
    assert_eq!(metric(&node, "waybill_trace_state{state=\"ok\"}").await?, 1.0);
    Ok(())
}
