//! The per-second stats history (`GET /api/v1/stats/history`) and the
//! overview's "stored" count, against the real binary.
//!
//! Contracts under test:
//! - the produce series count messages: summed over the window they equal
//!   what was sent, per topic, exactly (also at a coarser step, where a
//!   point is the per-second average); the consume series sum to what the
//!   group committed; a group that consumed nothing lags by the backlog;
//! - bad queries (from after to, unknown kind, step 0, too many points)
//!   answer 400 with an error sentence;
//! - `user_messages_stored` counts each user message once, whatever
//!   retries, dead letters and replays the log also holds.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{get_json, wait_until, Node};
use serde_json::Value;
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer};

fn consumer_options(node: &Node, group: &str, topic: &str) -> ConsumerOptions {
    let mut o = ConsumerOptions::new(node.broker.clone(), group, topic);
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    o
}

fn messages(prefix: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            key: Some(format!("{prefix}-{i}")),
            body: format!("{prefix} {i}").into_bytes(),
            ..Message::default()
        })
        .collect()
}

/// The points of the one series `query` selects (none before its first sample).
async fn points(node: &Node, query: &str) -> anyhow::Result<Vec<(i64, f64)>> {
    let v = get_json(format!("{}/api/v1/stats/history?{query}", node.http)).await?;
    let series = v["series"].as_array().cloned().unwrap_or_default();
    // None yet: that series has had no sample.
    anyhow::ensure!(series.len() <= 1, "{query}: want one series, got {v}");
    Ok(series
        .first()
        .and_then(|s| s["points"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
        .collect())
}

async fn sum(node: &Node, query: &str) -> anyhow::Result<f64> {
    Ok(points(node, query).await?.iter().map(|p| p.1).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sends_and_a_consumer_the_history_counts_them_exactly() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let node = &node;

    // "idle" subscribes to beta before anything is sent there, then leaves:
    // a group that consumed nothing.
    let idle = PushConsumer::start(consumer_options(node, "idle", "beta"), |_| async {
        ConsumeResult::Success
    })
    .await?;
    wait_until("group idle is known", Duration::from_secs(10), || async move {
        let v = get_json(format!("{}/api/v1/consumers", node.http)).await?;
        Ok(v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|g| g["group"] == "idle" && g["topic"] == "beta"))
    })
    .await?;
    idle.shutdown().await;

    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    producer.send_batch("alpha", messages("a", 30)).await?;
    producer.send_batch("beta", messages("b", 20)).await?;

    let consumed = Arc::new(AtomicUsize::new(0));
    let c = consumed.clone();
    let readers = PushConsumer::start(consumer_options(node, "readers", "alpha"), move |_| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            ConsumeResult::Success
        }
    })
    .await?;

    wait_until(
        "the history holds every send and commit",
        Duration::from_secs(30),
        || async move {
            let now = (
                sum(node, "kind=produce&topic=alpha").await?,
                sum(node, "kind=produce&topic=beta").await?,
                sum(node, "kind=consume&topic=alpha").await?,
                points(node, "kind=lag&group=idle").await?.last().map(|p| p.1),
            );
            println!("produce alpha, beta; consume alpha; lag idle: {now:?}");
            Ok(now == (30.0, 20.0, 30.0, Some(20.0)))
        },
    )
    .await?;
    readers.shutdown().await;
    assert_eq!(consumed.load(Ordering::SeqCst), 30, "each alpha message handled once");

    // One more second of samples changes nothing: no double counting.
    let v = get_json(format!("{}/api/v1/stats/history?kind=produce", node.http)).await?;
    let at = v["to_ms"].as_i64().unwrap_or_default();
    wait_until("a newer sample", Duration::from_secs(10), || async move {
        let last = points(node, "kind=retry").await?.last().map(|p| p.0).unwrap_or(0);
        Ok(last > at)
    })
    .await?;
    let v = get_json(format!("{}/api/v1/stats/history?kind=produce", node.http)).await?;
    let series = v["series"].as_array().cloned().unwrap_or_default();
    let topics: Vec<&str> = series.iter().filter_map(|s| s["topic"].as_str()).collect();
    assert_eq!(topics, vec!["alpha", "beta"]);
    let total: f64 = series
        .iter()
        .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p[1].as_f64())
        .sum();
    assert_eq!(total, 50.0, "the produce series sum to what was sent: {v}");
    assert!(series.iter().all(|s| s["points"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p[1].as_f64() > Some(0.0)))));
    assert_eq!(v["step_s"], 1);
    // At 5 s a step, a point is the per-second average: × 5 gives the count.
    assert_eq!(sum(node, "kind=produce&topic=alpha&step=5").await? * 5.0, 30.0);
    assert_eq!(sum(node, "kind=consume&topic=alpha").await?, 30.0);
    assert_eq!(
        points(node, "kind=lag&group=idle").await?.last().map(|p| p.1),
        Some(20.0)
    );
    assert_eq!(
        points(node, "kind=lag&group=readers").await?.last().map(|p| p.1),
        Some(0.0)
    );
    // The node-wide series are there too.
    let all = get_json(format!("{}/api/v1/stats/history", node.http)).await?;
    for kind in ["retry", "dlq", "fsync_ms", "unflushed_bytes"] {
        assert!(
            all["series"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["kind"] == kind),
            "no {kind} series in {all}"
        );
    }

    let client = reqwest::Client::new();
    for bad in [
        "from=2000&to=1000",
        "kind=nope",
        "kind=produce,bogus",
        "step=0",
        "step=x",
        "from=0&to=100000000",
    ] {
        let r = client
            .get(format!("{}/api/v1/stats/history?{bad}", node.http))
            .send()
            .await?;
        let code = r.status().as_u16();
        let body: Value = r.json().await?;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}: {body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_retries_and_a_replay_stored_counts_each_user_message_once() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "10ms", "--max-reconsume-times", "1"],
    )?;
    let node = &node;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    for batch in 0..10 {
        let sent = producer
            .send_batch("orders", messages(&format!("o{batch}"), 100))
            .await?;
        assert_eq!(sent.len(), 100);
    }
    // Every 50th message fails once (a retry); "o0-1" fails until the
    // handler is fixed (a dead letter, then replayed).
    let handled = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(AtomicBool::new(true));
    let (h, b) = (handled.clone(), broken.clone());
    let consumer = PushConsumer::start(consumer_options(node, "billing", "orders"), move |d| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let key = d.message.key.clone().unwrap_or_default();
            let n: usize = key.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(1);
            let poison = key == "o0-1" && b.load(Ordering::SeqCst);
            if poison || (n.is_multiple_of(50) && d.reconsume_times == 0) {
                return ConsumeResult::ReconsumeLater;
            }
            h.fetch_add(1, Ordering::SeqCst);
            ConsumeResult::Success
        }
    })
    .await?;
    let handled_now = &*handled;
    wait_until(
        "999 handled and one dead letter",
        Duration::from_secs(60),
        || async move {
            let dlq = common::dead_letters(node, "billing").await?;
            Ok(handled_now.load(Ordering::SeqCst) >= 999 && dlq.len() == 1)
        },
    )
    .await?;
    let dlq = common::dead_letters(node, "billing").await?;
    broken.store(false, Ordering::SeqCst);
    let id = dlq[0]["id"].as_str().unwrap_or_default().to_string();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/dlq/{id}/replay", node.http))
        .send()
        .await?;
    assert!(r.status().is_success(), "replay: {}", r.text().await?);
    wait_until("the replay is handled", Duration::from_secs(30), || async move {
        Ok(handled_now.load(Ordering::SeqCst) >= 1000)
    })
    .await?;
    consumer.shutdown().await;

    let node_view = get_json(format!("{}/api/v1/node", node.http)).await?;
    assert_eq!(node_view["user_messages_stored"], 1000, "{node_view}");
    let retries = sum(node, "kind=retry").await;
    println!("retry inflow {retries:?}, node {node_view}");
    Ok(())
}
