//! The tracer, end to end: a message's path in order (SQLite and
//! PostgreSQL), risk loss points, the audit after a power loss, and search
//! by key across restarts.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get_json, timeline_until, Node};
use serde_json::Value;
use waybill::broker::{Broker, BrokerOptions, Outgoing, Wiring};
use waybill::storage::faultfs::{FaultFs, PowerLoss};
use waybill::storage::{Flush, Store, StoreOptions};
use waybill::trace::sink::Subscribers;
use waybill::trace::{audit, search, timeline, Tracer};
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus};

fn stage_names(v: &Value) -> Vec<String> {
    v["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["stage"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn consumer_options(node: &Node, group: &str, topic: &str) -> ConsumerOptions {
    let mut o = ConsumerOptions::new(node.broker.clone(), group, topic);
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    o
}

/// Produce one message, consume it, read its timeline.
async fn full_path(extra: &[&str]) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), extra)?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let sent = producer
        .send(
            "path",
            Message {
                key: Some("trace-me".into()),
                body: b"follow me".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    assert_eq!(sent.status, SendStatus::SendOk);
    let consumer = PushConsumer::start(consumer_options(&node, "readers", "path"), |_| async {
        ConsumeResult::Success
    })
    .await?;
    let v = timeline_until(&node, &sent.id, |v| stage_names(v).contains(&"consume".to_string())).await?;
    // The same path in Prometheus terms, per topic and group.
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await?.text().await?;
    for line in [
        "waybill_topic_messages_produced_total{topic=\"path\",status=\"SEND_OK\"} 1",
        "waybill_topic_messages_stored_total{topic=\"path\"} 1",
        "waybill_topic_messages_flushed_total{topic=\"path\"} 1",
        "waybill_topic_messages_consumed_total{topic=\"path\",group=\"readers\"} 1",
        "waybill_consumer_lag{group=\"readers\",topic=\"path\"} 0",
        "waybill_group_dlq_total{group=\"readers\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line} in:\n{metrics}");
    }
    consumer.shutdown().await;
    println!("{}", serde_json::to_string_pretty(&v["stages"])?);
    assert_eq!(stage_names(&v), vec!["produce", "store", "flush", "deliver", "consume"]);
    let times: Vec<String> = v["stages"]
        .as_array()
        .map(|a| a.iter().map(|s| s["at"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "stages in time order");
    assert!(times.iter().all(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
    assert_eq!(v["status"], "consumed");
    let consume = v["stages"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stage"] == "consume"))
        .and_then(|s| s["detail"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        consume.starts_with("handled with CONSUME_SUCCESS in ") && consume.contains(" ms;"),
        "the handler's time: {consume}"
    );
    assert_eq!(v["groups"][0]["group"], "readers");
    assert_eq!(v["groups"][0]["status"], "consumed");
    assert_eq!(
        v["loss_points"].as_array().map(Vec::len),
        Some(0),
        "sync path carries no risk: {v}"
    );
    // The status filter: a second message, sent after the consumer left
    // (stored, or delivered to its last pull, never consumed), is newer;
    // `status=consumed` still finds the first, one per page.
    let second = producer
        .send(
            "path",
            Message {
                body: b"nobody reads me".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    let ids_for = |filter: &'static str| {
        let url = format!("{}/api/v1/messages?topic=path&limit=1{filter}", node.http);
        async move {
            let v = get_json(url).await?;
            let ids: Vec<String> = v["messages"]
                .as_array()
                .map(|a| a.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            anyhow::Ok(ids)
        }
    };
    let start = Instant::now();
    while ids_for("").await? != vec![second.id.clone()] {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "second message never traced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ids_for("&status=consumed").await?,
        vec![sent.id.clone()],
        "found past a newer hit of another status"
    );
    assert!(ids_for("&status=lost").await?.is_empty());
    let bad = reqwest::get(format!("{}/api/v1/messages?status=vanished", node.http)).await?;
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sqlite_trace_store_a_consumed_message_shows_its_full_path_in_order() -> anyhow::Result<()> {
    full_path(&[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_postgres_trace_store_a_consumed_message_shows_its_full_path_in_order() -> anyhow::Result<()> {
    let url = common::pg_schema("wb").await?;
    full_path(&["--trace-db", &url]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_oneway_send_and_an_auto_commit_consumer_their_risks_are_loss_points() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    producer
        .send_oneway(
            "risky",
            Message {
                key: Some("fire-and-forget".into()),
                body: b"?".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    let safe = producer
        .send(
            "risky",
            Message {
                key: Some("acked".into()),
                body: b"!".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    // Find the oneway message by its key (it has no result to carry an id).
    let start = Instant::now();
    let oneway_id = loop {
        let v = get_json(format!("{}/api/v1/messages?key=fire-and-forget", node.http)).await?;
        if let Some(id) = v["messages"][0]["id"].as_str() {
            break id.to_string();
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "oneway message never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut opts = consumer_options(&node, "lossy", "risky");
    opts.auto_commit = true;
    let consumer = PushConsumer::start(opts, |_| async { ConsumeResult::Success }).await?;
    let has_consume = |v: &Value| stage_names(v).contains(&"consume".to_string());
    let oneway = timeline_until(&node, &oneway_id, has_consume).await?;
    let acked = timeline_until(&node, &safe.id, has_consume).await?;
    consumer.shutdown().await;

    let risks = |v: &Value| -> Vec<(String, String)> {
        v["loss_points"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| {
                        (
                            l["stage"].as_str().unwrap_or("").into(),
                            l["kind"].as_str().unwrap_or("").into(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    println!("oneway: {}\nacked: {}", oneway["loss_points"], acked["loss_points"]);
    assert!(
        risks(&oneway).contains(&("produce".into(), "risk".into())),
        "oneway is an unconfirmed send"
    );
    assert!(
        !risks(&acked).contains(&("produce".into(), "risk".into())),
        "a sync send is confirmed"
    );
    for v in [&oneway, &acked] {
        assert!(
            risks(v).contains(&("consume".into(), "risk".into())),
            "auto-commit is a loss point: {v}"
        );
    }
    assert_eq!(oneway["send_mode"], "oneway");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_async_flush_and_a_power_loss_the_audit_marks_exactly_the_unsynced_acknowledged_messages_lost(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = format!("sqlite://{}", tmp.path().join("trace.db").display());
    let fs = FaultFs::new();
    let mut opts = StoreOptions::new(
        "/data",
        Flush::Async {
            interval: Duration::from_millis(100),
        },
    );
    opts.segment_bytes = 64 * 1024;
    let store = Arc::new(Store::open(Arc::new(fs.clone()), opts.clone())?);
    let tracer = Tracer::start(&db, store.clone()).await?;
    let broker = Broker::wired(
        store.clone(),
        BrokerOptions::default(),
        Wiring::events(Subscribers::tracing(tracer.clone())),
    )?;
    // Acked messages with where they end; stop once an fsync happened and
    // a good amount is still unsynced.
    let mut acked = Vec::new();
    let held = loop {
        let r = broker
            .send(Outgoing {
                topic: "audit".into(),
                key: Some(format!("k{}", acked.len())),
                body: vec![b'x'; 300],
                ..Outgoing::default()
            })
            .await?;
        assert_eq!(r.status, SendStatus::SendOk);
        acked.push(r.id);
        let s = store.stats();
        if s.flushed > 0 && s.log_end > s.flushed + 16 * 1024 {
            // The trace rows must be written before the plug is pulled (the
            // trace store is on a real disk, the message store on the faulty
            // one). Syncs are held meanwhile, so the unsynced data is still
            // there when the power goes (a sync already running may finish:
            // `flushed` then says so).
            let held = fs.stall_syncs();
            assert!(tracer.flush(Duration::from_secs(10)).await);
            if store.stats().flushed < store.stats().log_end {
                break held;
            }
            held.release();
        }
    };
    let report = fs.power_loss(PowerLoss::DropUnsynced);
    // The held flusher goes on, against a disk that is gone.
    held.release();
    drop(broker);
    drop(store);
    let durable: Vec<(u64, u64)> = report
        .iter()
        .filter(|(p, _)| p.starts_with("/data/log"))
        .filter_map(|(p, f)| {
            let base: u64 = p.file_stem()?.to_str()?.parse().ok()?;
            Some((base, base + f.durable_len))
        })
        .collect();

    let store = Arc::new(Store::open(Arc::new(fs.reboot()), opts)?);
    let tracer = Tracer::start(&db, store.clone()).await?;
    let found = audit::run(tracer.pool()?, &store, &audit::Start::at_open(&store, None)).await?;
    let mut expected = Vec::new();
    for id in &acked {
        let tl = timeline::load(tracer.pool()?, &store, &id.to_string())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no trace for {id}"))?;
        let end = id.pos + 1; // any byte of the frame past the durable end loses it
        let in_durable = durable.iter().any(|(from, to)| *from <= id.pos && end <= *to) && store.read(id.pos).is_ok();
        if !in_durable {
            expected.push(id.to_string());
            assert_eq!(tl.status, "lost", "{id}");
            let lp = tl.loss_points.iter().find(|l| l.kind == "lost");
            assert_eq!(lp.map(|l| l.stage.as_str()), Some("flush"), "{id} lost at flush");
        } else {
            assert_ne!(tl.status, "lost", "{id} survived");
        }
    }
    let mut lost = found.lost.clone();
    lost.sort();
    expected.sort();
    println!("acknowledged {}, lost per audit {}", acked.len(), lost.len());
    assert!(
        !expected.is_empty(),
        "the run must leave unsynced acknowledged messages"
    );
    assert_eq!(
        lost, expected,
        "the audit marks exactly the unsynced acknowledged messages"
    );
    // A second audit does not mark them twice.
    assert!(audit::run(tracer.pool()?, &store, &audit::Start::at_open(&store, None))
        .await?
        .lost
        .is_empty());
    // Lost messages stay findable: by their key, and in a topic search
    // beside the survivors.
    let lost_id = &expected[0];
    let i = acked
        .iter()
        .position(|id| id.to_string() == *lost_id)
        .unwrap_or(usize::MAX);
    let by_key = search::Query {
        key: Some(format!("k{i}")),
        limit: 10,
        ..search::Query::default()
    };
    let (hits, _) = search::run(tracer.pool()?, &store, &by_key).await?;
    assert_eq!(
        hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
        vec![lost_id.clone()]
    );
    let by_topic = search::Query {
        topic: Some("audit".into()),
        limit: 100_000,
        ..search::Query::default()
    };
    let (hits, more) = search::run(tracer.pool()?, &store, &by_topic).await?;
    assert!(!more);
    let mut all: Vec<String> = acked.iter().map(|id| id.to_string()).collect();
    all.reverse();
    assert_eq!(
        hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
        all,
        "every acknowledged message, newest first"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_keys_search_returns_all_and_only_their_messages_across_restarts() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let mut node = Node::start(&dir, &[])?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let mut with_a = Vec::new();
    let mut with_c = Vec::new();
    for (i, key) in ["A", "B", "A", "A C", "B", "A"].iter().enumerate() {
        let r = producer
            .send(
                "search",
                Message {
                    key: Some(key.to_string()),
                    body: format!("m{i}").into_bytes(),
                    ..Message::default()
                },
            )
            .await?;
        if key.split(' ').any(|w| w == "A") {
            with_a.push(r.id.clone());
        }
        if key.contains('C') {
            with_c.push(r.id);
        }
    }
    let ids = |v: &Value| -> Vec<String> {
        let mut out: Vec<String> = v["messages"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        out.sort();
        out
    };
    with_a.sort();
    // Wait until the trace has them all, then restart.
    let start = Instant::now();
    loop {
        let v = get_json(format!("{}/api/v1/messages?key=A", node.http)).await?;
        if v["messages"]
            .as_array()
            .is_some_and(|a| a.iter().all(|m| m["traced"] == true))
            && ids(&v) == with_a
        {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "trace never caught up: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.sigkill()?;
    drop(node);
    let node = Node::start(&dir, &[])?;
    // The trace store reconnects in the background; searches page through it.
    common::audit_done(&node).await?;
    let a = get_json(format!("{}/api/v1/messages?key=A", node.http)).await?;
    assert_eq!(ids(&a), with_a, "all and only the messages keyed A");
    let c = get_json(format!("{}/api/v1/messages?key=C", node.http)).await?;
    assert_eq!(ids(&c), with_c);
    let none = get_json(format!("{}/api/v1/messages?key=nobody", node.http)).await?;
    assert!(ids(&none).is_empty());
    // Paging: one per page, newest first, no fixed cap.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/api/v1/messages?key=A&limit=1&cursor={c}", node.http),
            None => format!("{}/api/v1/messages?key=A&limit=1", node.http),
        };
        let v = get_json(url).await?;
        paged.extend(ids(&v));
        // Each page says whether it covered everything, and how far back
        // it looked when not.
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(v["complete"], false, "{v}");
                assert!(v["scanned_down_to"].as_str().is_some_and(|t| t.contains('T')), "{v}");
                cursor = Some(c.to_string());
            }
            None => {
                assert_eq!(v["complete"], true, "{v}");
                assert!(v["scanned_down_to"].is_null(), "{v}");
                break;
            }
        }
    }
    paged.sort();
    assert_eq!(paged, with_a);
    // A topic search walks the trace's runs: all six, newest first, in
    // pages of two.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/api/v1/messages?topic=search&limit=2&cursor={c}", node.http),
            None => format!("{}/api/v1/messages?topic=search&limit=2", node.http),
        };
        let v = get_json(url).await?;
        let page: Vec<String> = v["messages"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        anyhow::ensure!(page.len() <= 2 && paged.len() < 6, "pages overrun: {v}");
        paged.extend(page);
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged.len(), 6, "{paged:?}");
    let mut newest_first = paged.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(paged, newest_first, "ids of one node and boot sort as their positions");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_live_listener_the_event_feed_streams_stages_and_stats() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let mut feed = reqwest::get(format!("{}/api/v1/events", node.http)).await?;
    assert_eq!(
        feed.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let sent = producer
        .send(
            "live",
            Message {
                body: b"watch me".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    let mut text = String::new();
    let start = Instant::now();
    while !(text.contains(&sent.id) && text.contains("event: stats")) {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "feed so far: {text}");
        match tokio::time::timeout(Duration::from_secs(3), feed.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => anyhow::bail!("feed ended: {text}"),
        }
    }
    assert!(text.contains("event: trace"));
    // A group's offset commit is a record in the log too: the stats count
    // it as stored, but produced stays at the one send.
    let mut o = ConsumerOptions::new(node.broker.clone(), "watchers", "live");
    o.pull_wait = Duration::from_millis(100);
    let consumer = PushConsumer::start(o, |_| async { ConsumeResult::Success }).await?;
    let stats = loop {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "feed so far: {text}");
        let last = text
            .split("event: stats")
            .last()
            .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data:")))
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok());
        if let Some(v) = last.filter(|v| v["messages_stored"].as_u64().is_some_and(|n| n >= 2)) {
            break v;
        }
        match tokio::time::timeout(Duration::from_secs(3), feed.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => anyhow::bail!("feed ended: {text}"),
        }
    };
    consumer.shutdown().await;
    assert_eq!(stats["messages_produced"], 1, "{stats}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_send_stored_by_its_second_attempt_the_produce_stage_says_so_and_carries_the_duplicate_risk(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    // The first broker in the list is not there: the first try fails to
    // connect, the second goes to the node.
    let mut o = ProducerOptions::new(common::free_addr()?);
    o.brokers.push(node.broker.clone());
    let producer = Producer::new(o)?;
    let sent = producer
        .send(
            "retried",
            Message {
                body: b"second time lucky".to_vec(),
                ..Message::default()
            },
        )
        .await?;
    assert_eq!(sent.attempt, 2);
    let v = timeline_until(&node, &sent.id, |v| v["traced"] == true).await?;
    assert_eq!(v["stages"][0]["stage"], "produce");
    assert_eq!(v["stages"][0]["detail"], "sync send, attempt 2", "{v}");
    let risk = v["loss_points"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["stage"] == "produce"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(risk["kind"], "risk", "{v}");
    Ok(())
}
