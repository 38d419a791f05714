//! The transactional outbox and its relay against real databases (SQLite
//! files, PostgreSQL 127.0.0.1:5432 `test`, one schema per test) and a
//! real `waybill serve`; relays that must die run as `waybill outbox relay`
//! processes and are SIGKILLed.
//!
//! Oracles: a message exists iff its business write committed; after a
//! relay dies between `SEND_OK` and marking, every row is delivered at
//! least once and, through the inbox, its effect happens exactly once;
//! two relays keep each key's order; a broker outage leaves rows pending
//! with their attempts counted (none parked before the attempts run out);
//! a missing or misshapen table is an error naming it.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_addr, get_json, pg_schema, timeline_until, wait_until, Node};
use sqlx::{AnyPool, Row};
use waybill_client::inbox::Inbox;
use waybill_client::outbox::{self, Relay, RelayOptions};
use waybill_client::sql;
use waybill_client::{ConsumeResult, ConsumerOptions, Delivered, Message, Producer, ProducerOptions, PushConsumer};

/// Longest wait for something the relay or consumer should finish.
const WAIT: Duration = Duration::from_secs(60);

/// The application's database: an outbox, orders (the business write) and
/// effects (what the consumer's handler does), with no unique key on
/// effects, so a repeated effect would show.
async fn app_db(url: &str) -> anyhow::Result<AnyPool> {
    let (pool, backend) = sql::connect(url, 4).await?;
    outbox::install(&pool, backend).await?;
    sqlx::raw_sql("CREATE TABLE orders (order_key TEXT NOT NULL, amount BIGINT NOT NULL); CREATE TABLE effects (order_key TEXT NOT NULL, seq BIGINT NOT NULL)")
        .execute(&pool)
        .await?;
    Ok(pool)
}

/// The databases each test runs against.
async fn databases(dir: &std::path::Path, name: &str) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
        pg_schema(name).await?,
    ])
}

/// One order: the business row and its message in one transaction.
async fn place_order(pool: &AnyPool, topic: &str, key: &str, seq: i64, commit: bool) -> anyhow::Result<i64> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO orders (order_key, amount) VALUES ($1, $2)")
        .bind(key)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    let row = outbox::enqueue(
        &mut *tx,
        topic,
        Message {
            key: Some(key.to_string()),
            body: format!("{key}#{seq}").into_bytes(),
            ..Message::default()
        },
    )
    .await?;
    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(row)
}

async fn count(pool: &AnyPool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query(sql).fetch_one(pool).await?.try_get::<i64, _>(0)?)
}

/// `waybill outbox relay …`; returns once it printed `ready_line`.
fn relay_process(url: &str, broker: &str, name: &str, extra: &[&str], ready_line: &str) -> anyhow::Result<Child> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args([
            "outbox",
            "relay",
            "--db",
            url,
            "--broker",
            broker,
            "--name",
            name,
            "--backoff-ms",
            "50",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let want = ready_line.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[relay] {line}");
            if line.contains(&want) {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(WAIT) {
        Ok(_) => Ok(child),
        Err(_) => {
            let _ = child.kill();
            anyhow::bail!("relay never printed {ready_line:?}")
        }
    }
}

/// A consumer whose handler writes the effect through the inbox, in the
/// inbox's transaction; counts deliveries and duplicates.
struct Effects {
    consumer: PushConsumer,
    deliveries: Arc<Mutex<u64>>,
    duplicates: Arc<Mutex<u64>>,
}

async fn consume_effects(node: &Node, url: &str, group: &str, topic: &str) -> anyhow::Result<Effects> {
    let inbox = Inbox::connect(url, group).await?;
    let mut o = inbox.declare(ConsumerOptions::new(node.broker.clone(), group, topic));
    o.heartbeat_interval = Duration::from_millis(100);
    o.pull_wait = Duration::from_millis(200);
    let deliveries = Arc::new(Mutex::new(0u64));
    let duplicates = Arc::new(Mutex::new(0u64));
    let (d2, u2) = (deliveries.clone(), duplicates.clone());
    let consumer = PushConsumer::start(o, move |d: Delivered| {
        let (inbox, d2, u2) = (inbox.clone(), d2.clone(), u2.clone());
        async move {
            *d2.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            let r = inbox
                .handle_in_tx(d, |conn, d| {
                    Box::pin(async move {
                        let body = String::from_utf8_lossy(&d.message.body).to_string();
                        let (key, seq) = body.split_once('#').unwrap_or((&body, "0"));
                        sqlx::query("INSERT INTO effects (order_key, seq) VALUES ($1, $2)")
                            .bind(key.to_string())
                            .bind(seq.parse::<i64>().unwrap_or(-1))
                            .execute(&mut *conn)
                            .await
                            .map(|_| ())
                    })
                })
                .await;
            if matches!(r, ConsumeResult::Duplicate(_)) {
                *u2.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            }
            r
        }
    })
    .await?;
    Ok(Effects {
        consumer,
        deliveries,
        duplicates,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_is_transactional_and_a_killed_relay_still_gives_one_effect_per_row() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    for (n, url) in databases(tmp.path(), "outbox_kill").await?.into_iter().enumerate() {
        let pool = app_db(&url).await?;
        let topic = format!("orders{n}");
        // Business write and message commit together, or neither exists.
        let kept = place_order(&pool, &topic, "kept", 0, true).await?;
        place_order(&pool, &topic, "rolled-back", 0, false).await?;
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM orders").await?, 1, "{url}");
        let keys: Vec<String> = sqlx::query("SELECT msg_key FROM waybill_outbox")
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        assert_eq!(
            keys,
            vec!["kept".to_string()],
            "{url}: a rolled-back order left a message"
        );
        for i in 1..50 {
            place_order(&pool, &topic, &format!("order-{i}"), i, true).await?;
        }
        // The relay sends all 50 and is killed before marking any.
        let mut relay = relay_process(
            &url,
            &node.broker,
            "r1",
            &["--halt-before-mark"],
            "halting before marking 50",
        )?;
        relay.kill()?;
        relay.wait()?;
        let s = outbox::status(&pool).await?;
        assert_eq!((s.pending, s.parked, s.max_attempts), (50, 0, 1), "{url}: {s:?}");
        // Restarted under its name, it takes its rows back at once and
        // sends them again: the broker now has two copies of each.
        let mut relay = relay_process(&url, &node.broker, "r1", &[], "relaying")?;
        wait_until("all rows marked sent", WAIT, || async {
            Ok(outbox::status(&pool).await?.sent == 50)
        })
        .await?;
        let effects = consume_effects(&node, &url, "billing", &topic).await?;
        wait_until("100 deliveries", WAIT, || async {
            Ok(*effects.deliveries.lock().unwrap_or_else(|p| p.into_inner()) >= 100)
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        effects.consumer.shutdown().await;
        let per_key: Vec<(String, i64)> =
            sqlx::query("SELECT order_key, COUNT(*) FROM effects GROUP BY order_key ORDER BY order_key")
                .fetch_all(&pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect::<anyhow::Result<_>>()?;
        assert_eq!(per_key.len(), 50, "{url}: every order has its effect");
        assert!(
            per_key.iter().all(|(_, n)| *n == 1),
            "{url}: an effect repeated: {per_key:?}"
        );
        assert_eq!(
            *effects.duplicates.lock().unwrap_or_else(|p| p.into_inner()),
            50,
            "{url}"
        );
        // The trace links the broker's message to the row.
        let found = get_json(format!("{}/api/v1/messages?key=kept&topic={topic}", node.http)).await?;
        let id = found["messages"][0]["id"].as_str().unwrap_or_default().to_string();
        assert!(!id.is_empty(), "{url}: message of row {kept} not found: {found}");
        let want = format!("relayed from outbox row {kept}, attempt");
        timeline_until(&node, &id, |tl| {
            tl["stages"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["stage"] == "produce" && s["detail"].as_str().is_some_and(|d| d.contains(&want)))
            })
        })
        .await?;
        let _ = relay.kill();
        let _ = relay.wait();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_postgres_send_every_row_and_keep_each_keys_order() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let url = pg_schema("outbox_two").await?;
    let pool = app_db(&url).await?;
    const KEYS: i64 = 10;
    const PER_KEY: i64 = 30;
    for seq in 0..PER_KEY {
        for k in 0..KEYS {
            place_order(&pool, "ledger", &format!("acct-{k}"), seq, true).await?;
        }
    }
    let mut a = relay_process(&url, &node.broker, "a", &[], "relaying")?;
    let mut b = relay_process(&url, &node.broker, "b", &[], "relaying")?;
    let seen: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let s2 = seen.clone();
    let mut o = ConsumerOptions::new(node.broker.clone(), "auditors", "ledger");
    o.pull_wait = Duration::from_millis(200);
    let consumer = PushConsumer::start(o, move |d: Delivered| {
        let s2 = s2.clone();
        async move {
            let body = String::from_utf8_lossy(&d.message.body).to_string();
            if let Some((k, seq)) = body.split_once('#') {
                s2.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(k.to_string())
                    .or_default()
                    .push(seq.parse().unwrap_or(-1));
            }
            ConsumeResult::Success
        }
    })
    .await?;
    wait_until("300 deliveries", WAIT, || async {
        Ok(seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= 300)
    })
    .await?;
    consumer.shutdown().await;
    let s = outbox::status(&pool).await?;
    assert_eq!((s.pending, s.parked, s.sent), (0, 0, KEYS * PER_KEY), "{s:?}");
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let want: Vec<i64> = (0..PER_KEY).collect();
    for k in 0..KEYS {
        assert_eq!(
            seen.get(&format!("acct-{k}")),
            Some(&want),
            "acct-{k} out of order or repeated"
        );
    }
    // Both relays really took rows (who sent what is in their rows' leases
    // only while in flight; the messages carry the attempt, the relay
    // names are in their stop lines).
    for (name, r) in [("a", &mut a), ("b", &mut b)] {
        let _ = Command::new("kill").args(["-s", "TERM", &r.id().to_string()]).status();
        let _ = r.wait();
        eprintln!("relay {name} stopped");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_leaves_rows_pending_with_attempts_then_all_are_delivered() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let url = format!("sqlite://{}", tmp.path().join("outage.db").display());
    let pool = app_db(&url).await?;
    for i in 0..20 {
        place_order(&pool, "payments", &format!("pay-{i}"), i, true).await?;
    }
    // Nothing listens here yet.
    let broker = free_addr()?;
    let http = free_addr()?;
    let mut popts = ProducerOptions::new(broker.clone());
    popts.send_timeout = Duration::from_millis(300);
    let producer = Arc::new(Producer::new(popts)?);
    let mut opts = RelayOptions::new(url.clone());
    opts.backoff_min = Duration::from_millis(50);
    opts.backoff_max = Duration::from_millis(200);
    opts.max_attempts = 1000;
    let relay = Relay::start(opts, producer.clone()).await?;
    wait_until("three failed attempts on every row", WAIT, || async {
        Ok(count(&pool, "SELECT COUNT(*) FROM waybill_outbox WHERE attempts >= 3").await? == 20)
    })
    .await?;
    let s = outbox::status(&pool).await?;
    assert_eq!((s.pending, s.retrying, s.parked, s.sent), (20, 20, 0, 0), "{s:?}");
    assert!(s.last_error.is_some(), "{s:?}");
    let stats = relay.stats();
    assert!(stats.failed_attempts >= 60 && stats.sent == 0, "{stats:?}");
    // The broker comes up: every row goes out, none was parked.
    let node = Node::start_at(&tmp.path().join("node"), &http, &broker, &[])?;
    wait_until("all rows sent", WAIT, || async {
        Ok(outbox::status(&pool).await?.sent == 20)
    })
    .await?;
    relay.shutdown().await;
    let messages = get_json(format!("{}/api/v1/messages?topic=payments&limit=100", node.http)).await?;
    assert_eq!(messages["messages"].as_array().map(Vec::len), Some(20), "{messages}");

    // Attempts that run out park the row (kept, visible), and a retry
    // sends it once the broker is there.
    place_order(&pool, "payments", "doomed", 0, true).await?;
    let mut opts = RelayOptions::new(url.clone());
    opts.backoff_min = Duration::from_millis(20);
    opts.max_attempts = 2;
    let dead = Producer::new(ProducerOptions::new(free_addr()?))?;
    let relay = Relay::start(opts, Arc::new(dead)).await?;
    wait_until("the row parked", WAIT, || async {
        Ok(outbox::status(&pool).await?.parked == 1)
    })
    .await?;
    relay.shutdown().await;
    let s = outbox::status(&pool).await?;
    assert_eq!(s.parked_rows.len(), 1, "{s:?}");
    assert_eq!(s.parked_rows[0].attempts, 2, "{s:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["outbox", "status", "--db", &url, "--json"])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["parked"], 1, "{v}");
    let ok = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["outbox", "retry", "--db", &url, "--all"])
        .status()?;
    assert!(ok.success());
    let relay = Relay::start(RelayOptions::new(url.clone()), producer).await?;
    wait_until("the parked row sent", WAIT, || async {
        Ok(outbox::status(&pool).await?.sent == 21)
    })
    .await?;
    relay.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_missing_or_misshapen_table_and_bad_messages_are_clear_errors() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let producer = Arc::new(Producer::new(ProducerOptions::new("127.0.0.1:1"))?);
    // No table.
    let url = format!("sqlite://{}", tmp.path().join("empty.db").display());
    let err = match Relay::start(RelayOptions::new(url.clone()), producer.clone()).await {
        Ok(_) => anyhow::bail!("a relay started without an outbox table"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("waybill_outbox does not exist"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(["outbox", "status", "--db", &url])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("waybill_outbox does not exist"),
        "{stderr}"
    );
    // A column of the wrong kind, and one missing, on both backends.
    for url in databases(tmp.path(), "outbox_shape").await? {
        let (pool, _) = sql::connect(&url, 1).await?;
        sqlx::raw_sql(
            "CREATE TABLE waybill_outbox (id BIGINT, topic TEXT, msg_key TEXT, tags TEXT, properties TEXT, body TEXT)",
        )
        .execute(&pool)
        .await?;
        let err = match Relay::start(RelayOptions::new(url.clone()), producer.clone()).await {
            Ok(_) => anyhow::bail!("a relay started on a misshapen table"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("column body is") && err.contains("bytes"), "{url}: {err}");
        sqlx::raw_sql("CREATE TABLE waybill_inbox (consumer_group TEXT, dedupe_key TEXT)")
            .execute(&pool)
            .await?;
        let err = match Inbox::connect(&url, "g").await {
            Ok(_) => anyhow::bail!("an inbox accepted a misshapen table"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("has no column message_id"), "{url}: {err}");
    }
    // Messages a producer could not send are refused at enqueue.
    let url = format!("sqlite://{}", tmp.path().join("app.db").display());
    let pool = app_db(&url).await?;
    let mut tx = pool.begin().await?;
    let bad = Message {
        properties: BTreeMap::from([("RECONSUME_TIME".to_string(), "15".to_string())]),
        ..Message::default()
    };
    let err = outbox::enqueue(&mut *tx, "t", bad).await.err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("RECONSUME_TIME is reserved")),
        "{err:?}"
    );
    let err = outbox::enqueue(&mut *tx, "", Message::default())
        .await
        .err()
        .map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("topic must be")), "{err:?}");
    tx.commit().await?;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM waybill_outbox").await?, 0);
    Ok(())
}
