//! The inbox (idempotent consumer) under redelivery, against real
//! PostgreSQL (127.0.0.1:5432 `test`), SQLite and Redis (127.0.0.1:6379,
//! and a `redis-server` of the test's own that it kills).
//!
//! Redelivery storm: 10,000 keyed messages; a consumer *process* (this test
//! binary re-run as a child) handles about a third with offsets committed
//! only hourly, then is SIGKILLed; the restarted member gets everything
//! again from offset 0. Oracle: the business table has exactly 10,000 rows,
//! one per key; the duplicates suppressed equal the rows the killed member
//! wrote; the broker shows the group idempotent with that many suppressed.
//!
//! Backend down: the handler is not run and the message is handed back
//! (a retry naming the backend), never acknowledged; it is handled once
//! the backend returns.

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_addr, get_json, pg_schema, timeline_until, wait_until, Node};
use serde_json::Value;
use sqlx::{AnyPool, Row};
use waybill_client::inbox::Inbox;
use waybill_client::{ConsumeResult, ConsumerOptions, Delivered, Message, Producer, ProducerOptions, PushConsumer};

const MESSAGES: u64 = 10_000;
/// The killed member stops handling here: about a third.
const FIRST_PASS: u64 = 3_334;
const TOPIC: &str = "storm";
/// Both passes use one member id, so the restarted member takes the dead
/// one's place at once instead of waiting out the client timeout.
const MEMBER: &str = "storm-member";
const WAIT: Duration = Duration::from_secs(240);

/// Child role: set in the environment of the re-run test binary.
const ROLE: &str = "WAYBILL_STORM_CHILD";

/// Where the effects go: a table without a unique key, so a repeat shows.
async fn business(url: &str) -> anyhow::Result<AnyPool> {
    let (pool, _) = waybill_client::sql::connect(url, 8).await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS shipments (order_key TEXT NOT NULL, message_id TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    Ok(pool)
}

async fn rows(pool: &AnyPool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query(sql).fetch_one(pool).await?.try_get::<i64, _>(0)?)
}

/// The handler: with a SQL inbox the shipment goes in the inbox's
/// transaction; with Redis it is written after the claim.
async fn ship(inbox: &Inbox, shipments: &AnyPool, d: Delivered) -> ConsumeResult {
    if inbox.backend() == "redis" {
        let pool = shipments.clone();
        inbox
            .handle(d, |d| async move {
                match sqlx::query("INSERT INTO shipments (order_key, message_id) VALUES ($1, $2)")
                    .bind(d.message.key.clone().unwrap_or_default())
                    .bind(d.id.clone())
                    .execute(&pool)
                    .await
                {
                    Ok(_) => ConsumeResult::Success,
                    Err(e) => ConsumeResult::reconsume_later(e),
                }
            })
            .await
    } else {
        inbox
            .handle_in_tx(d, |conn, d| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO shipments (order_key, message_id) VALUES ($1, $2)")
                        .bind(d.message.key.clone().unwrap_or_default())
                        .bind(d.id.clone())
                        .execute(&mut *conn)
                        .await
                        .map(|_| ())
                })
            })
            .await
    }
}

struct Member {
    consumer: PushConsumer,
    handled: Arc<AtomicU64>,
    duplicates: Arc<AtomicU64>,
}

/// A member of `group` shipping through `inbox`; with `stop_at`, its
/// handler stops (blocks, before the inbox) once that many were handled,
/// and offsets are committed only hourly (RocketMQ persists every 5 s).
async fn member(
    broker: &str,
    group: &str,
    inbox: Inbox,
    shipments: AnyPool,
    stop_at: Option<u64>,
) -> anyhow::Result<Member> {
    let mut o = inbox.declare(ConsumerOptions::new(broker, group, TOPIC));
    o.client_id = MEMBER.into();
    o.heartbeat_interval = Duration::from_millis(200);
    o.pull_wait = Duration::from_millis(200);
    if stop_at.is_some() {
        o.commit_interval = Duration::from_secs(3600);
    }
    let handled = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let (h, u) = (handled.clone(), duplicates.clone());
    let consumer = PushConsumer::start(o, move |d: Delivered| {
        let (inbox, shipments, h, u) = (inbox.clone(), shipments.clone(), h.clone(), u.clone());
        async move {
            if stop_at.is_some_and(|n| h.load(Ordering::SeqCst) >= n) {
                std::future::pending::<()>().await;
            }
            let r = ship(&inbox, &shipments, d).await;
            match &r {
                ConsumeResult::Success => h.fetch_add(1, Ordering::SeqCst),
                ConsumeResult::Duplicate(_) => u.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
            r
        }
    })
    .await?;
    Ok(Member {
        consumer,
        handled,
        duplicates,
    })
}

/// The child: a member that handles `FIRST_PASS` messages and waits to be
/// killed. A no-op unless the parent set [`ROLE`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_child() -> anyhow::Result<()> {
    let Ok(args) = std::env::var(ROLE) else {
        return Ok(());
    };
    let mut it = args.split('|');
    let (broker, group, dedupe, shipments) = match (it.next(), it.next(), it.next(), it.next()) {
        (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
        _ => anyhow::bail!("bad {ROLE}: {args}"),
    };
    let inbox = Inbox::connect(dedupe, group).await?;
    let shipments = business(shipments).await?;
    let _m = member(broker, group, inbox, shipments, Some(FIRST_PASS)).await?;
    tokio::time::sleep(WAIT).await;
    anyhow::bail!("storm child was never killed")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

async fn storm(dedupe: &str, shipments_url: &str) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(&tmp.path().join("node"), &[])?;
    let group = unique("shipping");
    let shipments = business(shipments_url).await?;
    let producer = Arc::new(Producer::new(ProducerOptions::new(node.broker.clone()))?);
    let mut sends = tokio::task::JoinSet::new();
    for chunk in 0..20u64 {
        let p = producer.clone();
        sends.spawn(async move {
            for n in (chunk..MESSAGES).step_by(20) {
                let m = Message {
                    key: Some(format!("order-{n}")),
                    body: format!("ship order {n}").into_bytes(),
                    ..Message::default()
                };
                p.send(TOPIC, m).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    // The first member, in its own process.
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "storm_child", "--nocapture", "--test-threads", "1"])
        .env(ROLE, format!("{}|{group}|{dedupe}|{shipments_url}", node.broker))
        .stdout(Stdio::null())
        .spawn()?;
    wait_until("the first member's share", WAIT, || async {
        Ok(rows(&shipments, "SELECT COUNT(*) FROM shipments").await? >= FIRST_PASS as i64)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill()?;
    child.wait()?;
    let first = rows(&shipments, "SELECT COUNT(*) FROM shipments").await?;
    assert!(first >= FIRST_PASS as i64 && first < MESSAGES as i64, "{first}");
    let shipped_first: String = sqlx::query("SELECT message_id FROM shipments LIMIT 1")
        .fetch_one(&shipments)
        .await?
        .try_get(0)?;
    // The restarted member gets everything again (nothing was committed).
    let inbox = Inbox::connect(dedupe, &group).await?;
    let m = member(&node.broker, &group, inbox, shipments.clone(), None).await?;
    wait_until("every message handled or suppressed", WAIT, || async {
        Ok(m.handled.load(Ordering::SeqCst) + m.duplicates.load(Ordering::SeqCst) >= MESSAGES)
    })
    .await?;
    let consumers = {
        let url = format!("{}/api/v1/consumers", node.http);
        let start = Instant::now();
        loop {
            let v = get_json(url.clone()).await?;
            let g = group_of(&v, &group);
            if g.is_some_and(|g| g["duplicates_suppressed"] == first) || start.elapsed() > Duration::from_secs(20) {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    m.consumer.shutdown().await;
    // The trace: the redelivery of a message the killed member shipped is
    // a consume stage with outcome `duplicate`.
    let tl = timeline_until(&node, &shipped_first, |tl| {
        tl["stages"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["stage"] == "consume" && s["outcome"] == "duplicate"))
    })
    .await?;
    assert!(
        tl.to_string().contains("duplicate suppressed: first handled as"),
        "{tl}"
    );
    assert_eq!(
        rows(&shipments, "SELECT COUNT(*) FROM shipments").await?,
        MESSAGES as i64,
        "{dedupe}"
    );
    assert_eq!(
        rows(&shipments, "SELECT COUNT(DISTINCT order_key) FROM shipments").await?,
        MESSAGES as i64,
        "{dedupe}"
    );
    assert_eq!(
        m.duplicates.load(Ordering::SeqCst),
        first as u64,
        "{dedupe}: every redelivery suppressed"
    );
    assert_eq!(m.handled.load(Ordering::SeqCst), MESSAGES - first as u64, "{dedupe}");
    let g = group_of(&consumers, &group).ok_or_else(|| anyhow::anyhow!("no group {group}: {consumers}"))?;
    assert_eq!(g["idempotent"], true, "{g}");
    assert_eq!(g["duplicates_suppressed"], first, "{g}");
    eprintln!(
        "{dedupe}: first member shipped {first} before SIGKILL; after restart {} shipped, {} suppressed",
        MESSAGES - first as u64,
        first
    );
    Ok(())
}

fn group_of<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["groups"].as_array()?.iter().find(|g| g["group"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_storm_with_a_postgresql_inbox_ships_each_order_once() -> anyhow::Result<()> {
    let url = pg_schema("inbox_storm").await?;
    storm(&url, &url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_storm_with_a_redis_inbox_ships_each_order_once() -> anyhow::Result<()> {
    let shipments = pg_schema("inbox_storm_redis").await?;
    storm("redis://127.0.0.1:6379", &shipments).await
}

/// A `redis-server` of this test's own, on `port`, keeping nothing on disk.
fn redis_server(port: u16) -> anyhow::Result<std::process::Child> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// Runs one message through a consumer whose inbox `down` makes
/// unreachable, then `up` restores; the handler must not run in between.
async fn backend_down(
    dedupe: &str,
    down: impl FnOnce() -> anyhow::Result<()>,
    up: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = Node::start(
        &tmp.path().join("node"),
        &["--retry-delays", "300ms", "--max-reconsume-times", "50"],
    )?;
    let inbox = Inbox::connect(dedupe, "dispatch").await?;
    let runs = Arc::new(AtomicU64::new(0));
    let r2 = runs.clone();
    let mut o = inbox.declare(ConsumerOptions::new(node.broker.clone(), "dispatch", "jobs"));
    o.pull_wait = Duration::from_millis(100);
    let consumer = PushConsumer::start(o, move |d: Delivered| {
        let (inbox, r2) = (inbox.clone(), r2.clone());
        async move {
            inbox
                .handle(d, |_| async move {
                    r2.fetch_add(1, Ordering::SeqCst);
                    ConsumeResult::Success
                })
                .await
        }
    })
    .await?;
    let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
    let send = |key: &'static str| Message {
        key: Some(key.into()),
        body: key.as_bytes().to_vec(),
        ..Message::default()
    };
    producer.send("jobs", send("job-1")).await?;
    wait_until("job-1 handled", WAIT, || async { Ok(runs.load(Ordering::SeqCst) == 1) }).await?;
    down()?;
    let job2 = producer.send("jobs", send("job-2")).await?;
    // The handler is not run; the message goes back with the reason.
    let url = format!("{}/api/v1/messages/{}", node.http, job2.id);
    wait_until("job-2 handed back naming the backend", WAIT, || async {
        let v = get_json(url.clone()).await?;
        Ok(v.to_string().contains("dedupe backend unavailable, handler not run"))
    })
    .await?;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "{dedupe}: the handler ran without its inbox"
    );
    up()?;
    wait_until("job-2 handled after the backend returned", WAIT, || async {
        Ok(runs.load(Ordering::SeqCst) == 2)
    })
    .await?;
    consumer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_inbox_that_is_down_runs_no_handler_and_the_message_is_retried() -> anyhow::Result<()> {
    let port: u16 = free_addr()?.rsplit(':').next().unwrap_or("0").parse()?;
    let server = Arc::new(std::sync::Mutex::new(Some(redis_server(port)?)));
    let (s1, s2) = (server.clone(), server.clone());
    backend_down(
        &format!("redis://127.0.0.1:{port}"),
        move || {
            if let Some(mut c) = s1.lock().unwrap_or_else(|p| p.into_inner()).take() {
                c.kill()?;
                c.wait()?;
            }
            Ok(())
        },
        move || {
            *s2.lock().unwrap_or_else(|p| p.into_inner()) = Some(redis_server(port)?);
            Ok(())
        },
    )
    .await?;
    if let Some(mut c) = server.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_inbox_that_is_locked_runs_no_handler_and_the_message_is_retried() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("inbox.db");
    let url = format!("sqlite://{}", path.display());
    // Another process holds the database's write lock: `sqlite3` in an
    // exclusive transaction until its stdin closes.
    let locker: Arc<std::sync::Mutex<Option<std::process::Child>>> = Arc::default();
    let (l1, l2) = (locker.clone(), locker.clone());
    let p = path.clone();
    backend_down(
        &url,
        move || {
            let mut c = Command::new("sqlite3")
                .arg(&p)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            if let Some(stdin) = c.stdin.as_mut() {
                use std::io::Write;
                stdin.write_all(b"BEGIN EXCLUSIVE;\nSELECT 'locked';\n")?;
                stdin.flush()?;
            }
            if let Some(out) = c.stdout.as_mut() {
                use std::io::BufRead;
                let mut line = String::new();
                std::io::BufReader::new(out).read_line(&mut line)?;
                anyhow::ensure!(line.trim() == "locked", "sqlite3 said {line:?}");
            }
            *l1.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
            Ok(())
        },
        move || {
            if let Some(mut c) = l2.lock().unwrap_or_else(|p| p.into_inner()).take() {
                drop(c.stdin.take());
                c.wait()?;
            }
            Ok(())
        },
    )
    .await
}
