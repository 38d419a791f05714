//! Dead letters are replayed at most once, against the real binary over
//! HTTP, with the SDK as producer and consumers.
//!
//! Contracts under test:
//! - Two bulk replays of the same dead letters sent at the same time replay
//!   every letter exactly once between them; a consumer that succeeds then
//!   handles each key exactly once (counted per key).
//! - Replaying a replayed letter answers 409 naming the earlier replay
//!   (its copy's id and who); with `force=true` a second copy is made and
//!   recorded as forced, with who.
//! - The replay state survives a restart (it is read back from the log).

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Node;
use serde_json::Value;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

const LETTERS: usize = 500;

fn consumer_options(node: &Node, group: &str, topic: &str) -> ConsumerOptions {
    let mut o = ConsumerOptions::new(node.broker.clone(), group, topic);
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    o
}

async fn eventually(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !check().await? {
        anyhow::ensure!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn dead_letters(node: &Node, group: &str) -> anyhow::Result<Vec<Value>> {
    let v: Value = reqwest::get(format!("{}/api/v1/dlq?group={group}", node.http))
        .await?
        .json()
        .await?;
    Ok(v["messages"].as_array().cloned().unwrap_or_default())
}

/// Sends `n` keyed messages and lets a failing consumer dead-letter them
/// all (`--max-reconsume-times 0`: the first failure dead-letters).
async fn dead_letter_all(node: &Node, group: &str, n: usize) -> anyhow::Result<()> {
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let messages: Vec<Message> = (0..n)
        .map(|i| Message {
            key: Some(format!("order-{i}")),
            body: format!("body {i}").into_bytes(),
            ..Message::default()
        })
        .collect();
    for chunk in messages.chunks(100) {
        producer.send_batch("orders", chunk.to_vec()).await?;
    }
    let failing = PushConsumer::start(consumer_options(node, group, "orders"), |_d| async {
        ConsumeResult::ReconsumeLater
    })
    .await?;
    eventually(Duration::from_secs(60), "every message in the DLQ", async || {
        Ok(dead_letters(node, group).await?.len() >= n)
    })
    .await?;
    failing.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn given_two_concurrent_bulk_replays_each_letter_is_replayed_once_and_each_key_consumed_once(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "0"],
    )?;
    dead_letter_all(&node, "billing", LETTERS).await?;
    let letters = dead_letters(&node, "billing").await?;
    assert_eq!(letters.len(), LETTERS);

    println!("--- two bulk replays of the same {LETTERS} letters at once");
    let client = reqwest::Client::new();
    let bulk = |who: &'static str| {
        let client = client.clone();
        let url = format!("{}/api/v1/dlq/replay?group=billing&rate=100000", node.http);
        async move {
            let resp = client.post(url).header("X-Waybill-User", who).send().await?;
            anyhow::ensure!(resp.status().is_success(), "bulk replay by {who}: {}", resp.status());
            Ok::<Value, anyhow::Error>(resp.json().await?)
        }
    };
    let (a, b) = tokio::join!(bulk("alice"), bulk("bob"));
    let (a, b) = (a?, b?);
    let mut replayed: BTreeMap<String, usize> = BTreeMap::new();
    for r in a["replayed"]
        .as_array()
        .into_iter()
        .chain(b["replayed"].as_array())
        .flatten()
    {
        let of = r["replay_of"].as_str().unwrap_or_default().to_string();
        *replayed.entry(of).or_default() += 1;
    }
    assert_eq!(replayed.len(), LETTERS, "every letter replayed");
    let twice: Vec<_> = replayed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "replayed more than once: {twice:?}");
    let states = dead_letters(&node, "billing").await?;
    assert!(
        states
            .iter()
            .all(|d| d["state"] == "replayed" && d["replays"].as_array().map(Vec::len) == Some(1)),
        "each letter shows exactly one replay"
    );

    println!("--- a consumer that succeeds handles each key once");
    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let seen = counts.clone();
    let consumer = PushConsumer::start(consumer_options(&node, "billing", "orders"), move |d| {
        let seen = seen.clone();
        async move {
            if let Ok(mut c) = seen.lock() {
                *c.entry(d.message.key.clone().unwrap_or_default()).or_default() += 1;
            }
            ConsumeResult::Success
        }
    })
    .await?;
    eventually(Duration::from_secs(60), "every key handled", async || {
        Ok(counts.lock().map(|c| c.len()).unwrap_or(0) >= LETTERS)
    })
    .await?;
    // Anything delivered twice would arrive within a few pulls.
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.shutdown().await;
    let counts = counts.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let keys: BTreeSet<String> = (0..LETTERS).map(|i| format!("order-{i}")).collect();
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), keys);
    let dup: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dup.is_empty(), "handled more than once: {dup:?}");
    Ok(())
}

#[tokio::test]
async fn given_a_replayed_letter_a_second_replay_is_refused_unless_forced() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let args = ["--retry-delays", "10ms", "--max-reconsume-times", "0"];
    let mut node = Node::start(&dir, &args)?;
    dead_letter_all(&node, "billing", 1).await?;
    let letter = dead_letters(&node, "billing").await?[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let client = reqwest::Client::new();
    let replay = |force: bool, who: &'static str| {
        let url = format!("{}/api/v1/dlq/{letter}/replay?force={force}", node.http);
        let client = client.clone();
        async move {
            let resp = client.post(url).header("X-Waybill-User", who).send().await?;
            let status = resp.status().as_u16();
            Ok::<(u16, Value), anyhow::Error>((status, resp.json().await?))
        }
    };
    let (status, first) = replay(false, "alice").await?;
    assert_eq!(status, 200, "{first}");
    let first_copy = first["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(first["forced"], false);

    let (status, again) = replay(false, "bob").await?;
    assert_eq!(status, 409, "{again}");
    let why = again["error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&first_copy) && why.contains("alice"),
        "names the earlier replay: {why}"
    );

    println!("--- the refusal holds after a restart");
    node.sigkill()?;
    drop(node);
    let node = Node::start(&dir, &args)?;
    let replay = |force: bool, who: &'static str| {
        let url = format!("{}/api/v1/dlq/{letter}/replay?force={force}", node.http);
        let client = client.clone();
        async move {
            let resp = client.post(url).header("X-Waybill-User", who).send().await?;
            let status = resp.status().as_u16();
            Ok::<(u16, Value), anyhow::Error>((status, resp.json().await?))
        }
    };
    let (status, again) = replay(false, "bob").await?;
    assert_eq!(status, 409, "{again}");

    let (status, forced) = replay(true, "carol").await?;
    assert_eq!(status, 200, "{forced}");
    assert_eq!(forced["forced"], true);
    assert_ne!(forced["id"], first["id"], "a second copy");
    let listed = dead_letters(&node, "billing").await?;
    let replays = listed[0]["replays"].as_array().cloned().unwrap_or_default();
    assert_eq!(replays.len(), 2, "{replays:?}");
    assert_eq!(replays[0]["by"], "alice");
    assert_eq!(replays[1]["by"], "carol");
    assert_eq!(replays[1]["forced"], true);
    Ok(())
}
