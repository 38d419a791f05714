//! The idempotent consumer (inbox) and the outbox relay, end to end on a
//! real node: a group whose members declare an inbox shows as idempotent
//! with the duplicates it suppressed (`/api/v1/consumers`, and from the
//! trace store on `/api/v1/consumers/duplicates`); a suppressed message's
//! timeline has a `consume` stage with outcome `duplicate`; a message
//! delivered twice is a duplicate-effects risk for a group without an
//! inbox and none for the inbox group; a message an outbox relay sent
//! names its row and attempt on its produce stage.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{get_json, timeline_until, Node};
use serde_json::Value;
use waybill_client::properties::{PROP_OUTBOX_ATTEMPT, PROP_OUTBOX_ROW};
use waybill_client::protocol::Dedupe;
use waybill_client::{ConsumeResult, ConsumerOptions, Delivered, Message, Producer, ProducerOptions, PushConsumer};

const INBOX_GROUP: &str = "billing";
const PLAIN_GROUP: &str = "audit";
/// The message both groups hand back once before handling it.
const REDELIVERED: &str = "order-1";

fn consumer_options(node: &Node, group: &str, dedupe: Option<Dedupe>) -> ConsumerOptions {
    let mut o = ConsumerOptions::new(node.broker.clone(), group, "orders");
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    o.dedupe = dedupe;
    o
}

/// What the inbox group's handler says for a message: even keys were
/// "handled before" (a duplicate the inbox acknowledges), `REDELIVERED`
/// fails once, the rest succeed.
fn inbox_handling(d: &Delivered) -> ConsumeResult {
    let key = d.message.key.clone().unwrap_or_default();
    let n: u32 = key.trim_start_matches("order-").parse().unwrap_or(1);
    if key == REDELIVERED && d.reconsume_times == 0 {
        ConsumeResult::ReconsumeLater
    } else if n.is_multiple_of(2) {
        ConsumeResult::Duplicate(format!("first handled as {key}-earlier at 2026-12-01T00:00:00.000Z"))
    } else {
        ConsumeResult::Success
    }
}

fn group<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["groups"].as_array()?.iter().find(|g| g["group"] == name)
}

/// Polls `url` until `done` holds; fails after 20 s with the last answer.
async fn until(url: String, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        let v = get_json(url.clone()).await?;
        if done(&v) {
            return Ok(v);
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "{what} never came: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stage<'a>(tl: &'a Value, name: &str, group: Option<&str>) -> Option<&'a Value> {
    tl["stages"]
        .as_array()?
        .iter()
        .find(|s| s["stage"] == name && group.is_none_or(|g| s["group"] == g))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sqlite_an_inbox_group_shows_its_suppressed_duplicates_and_no_redelivery_risk() -> anyhow::Result<()> {
    inbox_path(&[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_postgres_an_inbox_group_shows_its_suppressed_duplicates_and_no_redelivery_risk() -> anyhow::Result<()> {
    let url = common::pg_schema("wb_inbox").await?;
    inbox_path(&["--trace-db", &url]).await
}

/// The whole scenario on a node started with `extra` arguments.
async fn inbox_path(extra: &[&str]) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut args = vec!["--retry-delays", "50ms", "--max-reconsume-times", "3"];
    args.extend_from_slice(extra);
    let node = Node::start(&tmp.path().join("node"), &args)?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut ids = Vec::new();
    for i in 0..20 {
        let msg = Message {
            key: Some(format!("order-{i}")),
            body: format!("order {i}").into_bytes(),
            ..Message::default()
        };
        ids.push(producer.send("orders", msg).await?.id);
    }
    let mut relayed = Message {
        key: Some("relayed".into()),
        body: b"from the outbox".to_vec(),
        ..Message::default()
    };
    relayed.properties.insert(PROP_OUTBOX_ROW.into(), "42".into());
    relayed.properties.insert(PROP_OUTBOX_ATTEMPT.into(), "2".into());
    let relayed = producer.send("outbox-relayed", relayed).await?;

    let inbox = Some(Dedupe {
        backend: "sqlite".into(),
        window_ms: 3_600_000,
    });
    let billing = PushConsumer::start(consumer_options(&node, INBOX_GROUP, inbox), |d| {
        let result = inbox_handling(&d);
        async move { result }
    })
    .await?;
    let audit = PushConsumer::start(consumer_options(&node, PLAIN_GROUP, None), |d| {
        let again = d.message.key.as_deref() == Some(REDELIVERED) && d.reconsume_times == 0;
        async move {
            if again {
                ConsumeResult::ReconsumeLater
            } else {
                ConsumeResult::Success
            }
        }
    })
    .await?;

    // The group registry: idempotent, with its inbox and 10 suppressed.
    let consumers = until(format!("{}/api/v1/consumers", node.http), "10 suppressed", |v| {
        group(v, INBOX_GROUP).is_some_and(|g| g["duplicates_suppressed"] == 10)
    })
    .await?;
    let g = group(&consumers, INBOX_GROUP).ok_or_else(|| anyhow::anyhow!("no group"))?;
    println!("inbox group: {g}");
    assert_eq!(g["idempotent"], true);
    assert_eq!(g["dedupe"]["backend"], "sqlite");
    assert_eq!(g["dedupe"]["window_ms"], 3_600_000);
    assert_eq!(g["dedupe_covers_retries"], true, "1h outlasts 3 retries of 50ms");
    assert_eq!(g["dedupe_warning"], Value::Null);
    assert_eq!(g["retry_span_ms"], 150);
    let plain = group(&consumers, PLAIN_GROUP).ok_or_else(|| anyhow::anyhow!("no plain group"))?;
    assert_eq!(plain["idempotent"], false);
    assert_eq!(plain["dedupe"], Value::Null);
    assert_eq!(plain["dedupe_covers_retries"], Value::Null);
    assert_eq!(plain["duplicates_suppressed"], 0);

    // The trace store's count, per group.
    let dups = until(
        format!("{}/api/v1/consumers/duplicates", node.http),
        "suppressed counts",
        |v| group(v, INBOX_GROUP).is_some_and(|g| g["suppressed"] == 10),
    )
    .await?;
    assert!(group(&dups, PLAIN_GROUP).is_none(), "{dups}");

    // An even message: the inbox group's consume stage is a duplicate.
    let tl = timeline_until(&node, &ids[4], |v| {
        stage(v, "consume", Some(INBOX_GROUP)).is_some() && stage(v, "consume", Some(PLAIN_GROUP)).is_some()
    })
    .await?;
    let consume = stage(&tl, "consume", Some(INBOX_GROUP)).cloned().unwrap_or_default();
    assert_eq!(consume["outcome"], "duplicate", "{tl}");
    assert_eq!(
        consume["detail"],
        "duplicate suppressed: first handled as order-4-earlier at 2026-12-01T00:00:00.000Z; offset committed"
    );
    assert_eq!(
        stage(&tl, "consume", Some(PLAIN_GROUP)).map(|s| &s["outcome"]),
        Some(&"ok".into())
    );
    assert_eq!(tl["status"], "consumed");
    assert_eq!(tl["loss_points"], serde_json::json!([]), "{tl}");

    // Delivered twice to each group: a risk for the group without an
    // inbox only.
    let tl = timeline_until(&node, &ids[1], |v| {
        v["groups"]
            .as_array()
            .is_some_and(|g| g.len() == 2 && g.iter().all(|g| g["status"] == "consumed"))
    })
    .await?;
    println!("{}", serde_json::to_string_pretty(&tl["loss_points"])?);
    for name in [INBOX_GROUP, PLAIN_GROUP] {
        assert_eq!(group(&tl, name).map(|g| &g["attempts"]), Some(&2.into()), "{tl}");
    }
    assert_eq!(
        group(&tl, INBOX_GROUP).map(|g| &g["dedupe_window_ms"]),
        Some(&3_600_000.into())
    );
    let risks: Vec<&Value> = tl["loss_points"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    assert!(
        risks.iter().any(|r| r["group"] == PLAIN_GROUP
            && r["stage"] == "deliver"
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("without idempotent handling"))),
        "{tl}"
    );
    assert!(risks.iter().all(|r| r["group"] != INBOX_GROUP), "{tl}");

    // Relayed from an outbox: the produce stage names the row and attempt.
    let tl = timeline_until(&node, &relayed.id, |v| stage(v, "produce", None).is_some()).await?;
    let detail = stage(&tl, "produce", None)
        .map(|s| s["detail"].to_string())
        .unwrap_or_default();
    assert!(detail.contains("relayed from outbox row 42, attempt 2"), "{detail}");

    billing.shutdown().await;
    audit.shutdown().await;
    Ok(())
}
