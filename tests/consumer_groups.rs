//! Consumer groups, retries, dead letters and producer retries against the
//! real binary, with the `waybill-client` SDK.
//!
//! Contracts under test:
//! - A message whose handler keeps failing walks the retry levels (one
//!   delivery per level, `reconsume_times` 0, 1, 2, …), then lands in
//!   `%DLQ%<group>` after `max_reconsume_times`; every other message is
//!   consumed exactly once. A replay delivers it again, once.
//! - Retries waiting for their delay survive a broker crash and restart.
//! - A producer whose first broker is down retries on the next one and the
//!   message is stored exactly once.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Node;
use serde_json::Value;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus};

fn consumer_options(node: &Node, group: &str, topic: &str) -> ConsumerOptions {
    let mut o = ConsumerOptions::new(node.broker.clone(), group, topic);
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    o
}

fn message(key: &str, body: &str) -> Message {
    Message {
        key: Some(key.to_string()),
        body: body.as_bytes().to_vec(),
        ..Message::default()
    }
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > limit {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn get_json(url: String) -> anyhow::Result<Value> {
    Ok(reqwest::get(url).await?.json().await?)
}

#[derive(Default)]
struct Seen {
    /// Ids of successful deliveries, in order (duplicates kept).
    successes: Vec<String>,
    /// `reconsume_times` of each failed delivery of the poison message.
    poison_attempts: Vec<u32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_handler_failing_one_key_should_walk_the_retry_levels_dead_letter_it_and_consume_the_rest_once(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms,20ms,40ms", "--max-reconsume-times", "3"],
    )?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = producer
            .send("orders", message(&format!("k{i}"), &format!("order {i}")))
            .await?;
        assert_eq!(r.status, SendStatus::SendOk);
        ids.push(r.id);
    }
    let poison = producer.send("orders", message("poison", "bad order")).await?;
    assert_eq!(poison.status, SendStatus::SendOk);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let failing = Arc::new(AtomicBool::new(true));
    let (s, f) = (seen.clone(), failing.clone());
    let consumer = PushConsumer::start(consumer_options(&node, "billing", "orders"), move |d| {
        let (s, f) = (s.clone(), f.clone());
        async move {
            let mut seen = s.lock().unwrap_or_else(|p| p.into_inner());
            if d.message.key.as_deref() == Some("poison") && f.load(Ordering::SeqCst) {
                seen.poison_attempts.push(d.reconsume_times);
                return ConsumeResult::ReconsumeLater;
            }
            seen.successes.push(d.id);
            ConsumeResult::Success
        }
    })
    .await?;

    let dlq_url = format!("{}/api/v1/dlq?group=billing", node.http);
    let start = Instant::now();
    loop {
        let dlq = get_json(dlq_url.clone()).await?;
        let done = seen.lock().map(|s| s.successes.len() >= 50).unwrap_or(false);
        if done && dlq["messages"].as_array().is_some_and(|m| m.len() == 1) {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "no dead letter after 30 s: {dlq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dlq = get_json(dlq_url.clone()).await?;
    let letter = &dlq["messages"][0];
    println!("dead letter: {letter}");
    assert_eq!(letter["origin_id"].as_str(), Some(poison.id.as_str()));
    assert_eq!(letter["state"], "dead");
    assert_eq!(letter["reconsume_times"], 3);
    assert!(letter["reason"].as_str().unwrap_or("").contains("RECONSUME_LATER"));
    {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        assert_eq!(s.poison_attempts, vec![0, 1, 2, 3], "one delivery per retry level");
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &s.successes {
            *counts.entry(id).or_default() += 1;
        }
        assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
        let got: HashSet<&str> = counts.keys().copied().collect();
        let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(got, want);
    }

    // The handler is fixed; replay the dead letter.
    failing.store(false, Ordering::SeqCst);
    let dlq_id = letter["id"].as_str().unwrap_or_default().to_string();
    let replay: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/dlq/{dlq_id}/replay", node.http))
        .header("x-waybill-user", "test")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(replay["replay_of"].as_str(), Some(dlq_id.as_str()));
    assert!(replay["id"].as_str().is_some());
    eventually(Duration::from_secs(10), "the replayed message", || {
        seen.lock().map(|s| s.successes.contains(&poison.id)).unwrap_or(false)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    consumer.shutdown().await;

    let successes = seen.lock().map(|s| s.successes.clone()).unwrap_or_default();
    let unique: HashSet<&String> = successes.iter().collect();
    println!("successful deliveries {}, unique ids {}", successes.len(), unique.len());
    assert_eq!(successes.len(), 51, "no loss, no duplicate in the successful set");
    assert_eq!(unique.len(), 51);
    let dlq = get_json(dlq_url).await?;
    assert_eq!(dlq["messages"][0]["state"], "replayed");
    assert_eq!(dlq["messages"][0]["replays"][0]["by"], "test");
    Ok(())
}

type Log = Arc<Mutex<Vec<(String, u32, Instant)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_messages_waiting_in_a_retry_level_when_the_broker_restarts_should_still_deliver_them(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let args = ["--retry-delays", "2s", "--max-reconsume-times", "5"];
    let mut node = Node::start(&dir, &args)?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut ids = HashSet::new();
    for i in 0..5 {
        ids.insert(producer.send("jobs", message(&format!("r{i}"), "work")).await?.id);
    }
    // (id, reconsume_times, when) of every delivery.
    let deliveries: Log = Arc::default();
    let handler = |log: Log| {
        move |d: waybill_client::Delivered| {
            let log = log.clone();
            async move {
                let first = d.reconsume_times == 0;
                if let Ok(mut l) = log.lock() {
                    l.push((d.id, d.reconsume_times, Instant::now()));
                }
                // Fail the first delivery: every message goes to retry level 1 (2 s).
                if first {
                    ConsumeResult::ReconsumeLater
                } else {
                    ConsumeResult::Success
                }
            }
        }
    };
    let consumer = PushConsumer::start(consumer_options(&node, "workers", "jobs"), handler(deliveries.clone())).await?;
    eventually(Duration::from_secs(10), "five first deliveries", || {
        deliveries.lock().map(|d| d.len() >= 5).unwrap_or(false)
    })
    .await?;
    // Let the send-backs finish, then stop the consumer and crash the broker
    // while the retries still wait for their delay.
    tokio::time::sleep(Duration::from_millis(300)).await;
    consumer.shutdown().await;
    println!("--- SIGKILL the broker with 5 retries pending");
    node.sigkill()?;
    drop(node);
    let node = Node::start(&dir, &args)?;
    let after: Log = Arc::default();
    let consumer = PushConsumer::start(consumer_options(&node, "workers", "jobs"), handler(after.clone())).await?;
    eventually(Duration::from_secs(15), "the retries after restart", || {
        after.lock().map(|d| d.len() >= 5).unwrap_or(false)
    })
    .await?;
    consumer.shutdown().await;
    let first = deliveries.lock().map(|d| d.clone()).unwrap_or_default();
    let after = after.lock().map(|d| d.clone()).unwrap_or_default();
    let retried: HashSet<String> = after
        .iter()
        .filter(|(_, n, _)| *n == 1)
        .map(|(id, _, _)| id.clone())
        .collect();
    assert_eq!(retried, ids, "every pending retry delivered after the restart");
    assert!(after.iter().all(|(_, n, _)| *n == 1), "no first delivery repeated");
    for (id, _, at) in &after {
        let failed = first.iter().find(|(f, _, _)| f == id).map(|(_, _, t)| *t);
        let waited = failed.map(|t| at.duration_since(t)).unwrap_or_default();
        println!("{id}: retried {waited:?} after its failed delivery");
        // The delay is counted from the send-back, which follows the handler.
        assert!(waited >= Duration::from_secs(2), "{id} retried before its 2 s delay");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_first_broker_down_when_sending_should_retry_on_the_next_and_store_one_copy() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    // An address with nothing listening: connection refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let mut opts = ProducerOptions::new(dead.clone());
    opts.brokers.push(node.broker.clone());
    let producer = Producer::new(opts)?;
    let r = producer.send("payments", message("pay-1", "100 EUR")).await?;
    println!("{r:?}");
    assert_eq!(r.status, SendStatus::SendOk);
    assert_eq!(r.attempt, 2, "first try on the dead broker, second on the live one");
    assert_eq!(r.broker, node.broker);
    let found = get_json(format!("{}/api/v1/messages?key=pay-1", node.http)).await?;
    assert_eq!(
        found["messages"].as_array().map(Vec::len),
        Some(1),
        "exactly one copy: {found}"
    );
    assert_eq!(found["messages"][0]["id"].as_str(), Some(r.id.as_str()));

    // With every broker down the send fails after 1 + retry_times tries.
    let producer = Producer::new(ProducerOptions::new(dead))?;
    let err = producer.send("payments", message("pay-2", "x")).await;
    assert!(err.is_err());
    Ok(())
}

/// Per group, a message's delivery state comes from the trace and the live
/// group state: consumed by one group, waiting in another whose member is
/// online, and waiting for a group whose only member left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_groups_should_report_consumed_not_consumed_yet_and_consumer_offline() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &["--client-timeout-ms", "600"])?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let sent = producer.send("states", message("s-1", "one")).await?;
    assert_eq!(sent.status, SendStatus::SendOk);

    // "eager" consumes it.
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let eager = PushConsumer::start(consumer_options(&node, "eager", "states"), move |_d| {
        flag.store(true, Ordering::Relaxed);
        async { ConsumeResult::Success }
    })
    .await?;
    eventually(Duration::from_secs(10), "eager consumes", || {
        done.load(Ordering::Relaxed)
    })
    .await?;
    // "slow" is online but its handler never finishes.
    let slow = PushConsumer::start(consumer_options(&node, "slow", "states"), |_d| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        ConsumeResult::Success
    })
    .await?;
    // "gone" joined and left: nobody is there to pick it up.
    let gone = PushConsumer::start(consumer_options(&node, "gone", "states"), |_d| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        ConsumeResult::Success
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(gone);

    let url = format!("{}/api/v1/messages/{}", node.http, sent.id);
    let mut states = BTreeMap::new();
    for _ in 0..100 {
        let v = get_json(url.clone()).await?;
        states = v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                (
                    g["group"].as_str().unwrap_or_default().to_string(),
                    g["delivery"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect::<BTreeMap<_, _>>();
        if states.get("eager").map(String::as_str) == Some("consumed")
            && states.get("gone").map(String::as_str) == Some("consumer_offline")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("delivery states: {states:?}");
    assert_eq!(states.get("eager").map(String::as_str), Some("consumed"));
    assert_eq!(states.get("slow").map(String::as_str), Some("not_consumed_yet"));
    assert_eq!(states.get("gone").map(String::as_str), Some("consumer_offline"));
    eager.shutdown().await;
    // Its handler is still busy: stop without waiting for it.
    drop(slow);
    Ok(())
}
