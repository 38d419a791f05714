//! `waybill-bench outbox`: what the outbox and the inbox cost, each beside
//! its baseline in the same run, against an own node (sync flush, traced).
//!
//! 1. **Relay vs direct send**: `--messages` 1 KiB messages sent by
//!    `--concurrency` tasks calling `Producer::send` (the baseline), then
//!    the same number enqueued in the outbox (not timed) and relayed with
//!    a relay claiming `--concurrency` rows per round; msgs/s each, ratio.
//! 2. **Inbox vs plain handler**: one topic holding `--messages` keyed
//!    messages, consumed by a fresh group per variant; every handler
//!    writes one business row. Plain: an autocommitted INSERT. SQL inbox:
//!    the INSERT and the dedupe key in one transaction (`handle_in_tx`).
//!    Redis inbox: `SET NX`, the INSERT, `SET done`. µs per message each,
//!    and the ratio to plain.
//!
//! The business database is `--db` (the outbox and the SQL inbox live
//! there too); `--redis` adds the Redis row. Each run starts from empty
//! tables it creates (`bench_*`, `waybill_outbox`, `waybill_inbox`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use serde_json::json;
use sqlx::AnyPool;
use waybill::bench::node::OwnNode;
use waybill_client::inbox::Inbox;
use waybill_client::outbox::{self, Relay, RelayOptions};
use waybill_client::sql;
use waybill_client::{ConsumeResult, ConsumerOptions, Delivered, Message, Producer, ProducerOptions, PushConsumer};

#[derive(Debug, Parser)]
#[command(name = "waybill-bench outbox")]
pub struct OutboxBench {
    /// The business database: sqlite://PATH or postgres://… (tables are created and emptied).
    #[arg(long, default_value = "sqlite://bench-outbox.db")]
    db: String,
    /// Also measure a Redis inbox at this URL.
    #[arg(long)]
    redis: Option<String>,
    /// Messages per measurement.
    #[arg(long, default_value_t = 5000)]
    messages: u64,
    /// Concurrent sends (direct) and rows per relay round (outbox).
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

const BODY: usize = 1024;
/// Longest a measured phase may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

fn body(n: u64) -> Vec<u8> {
    let mut b = format!("order {n} ").into_bytes();
    b.resize(BODY, b'.');
    b
}

pub async fn run(args: OutboxBench) -> anyhow::Result<()> {
    ensure!(
        args.messages > 0 && args.concurrency > 0,
        "--messages and --concurrency must be positive"
    );
    let node = OwnNode::start("sync", None).await?;
    let (pool, backend) = sql::connect(&args.db, 8).await.context("--db")?;
    for t in ["bench_effects", "waybill_outbox", "waybill_inbox"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}")))
            .execute(&pool)
            .await?;
    }
    sqlx::raw_sql("CREATE TABLE bench_effects (order_key TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    outbox::install(&pool, backend).await?;
    let producer = Arc::new(Producer::new(ProducerOptions::new(node.broker.clone()))?);

    eprintln!(
        "direct send: {} × {BODY} B at {} in flight",
        args.messages, args.concurrency
    );
    let direct = direct(&producer, args.messages, args.concurrency).await?;
    eprintln!("outbox relay: enqueue, then relay {} rows per round", args.concurrency);
    let relayed = relay(&pool, &args, producer.clone()).await?;

    // The consume side: one topic, fresh group per variant.
    for n in 0..args.messages {
        let m = Message {
            key: Some(format!("order-{n}")),
            body: body(n),
            ..Message::default()
        };
        producer.send("bench-inbox", m).await?;
    }
    eprintln!("plain handler");
    let plain = consume(&node, &pool, None, "plain", args.messages).await?;
    eprintln!("{} inbox", backend.name());
    let inbox = Inbox::connect(&args.db, "inbox-sql").await?;
    let sql_inbox = consume(&node, &pool, Some(inbox), "inbox-sql", args.messages).await?;
    let redis = match &args.redis {
        Some(url) => {
            eprintln!("redis inbox");
            let group = format!("inbox-redis-{}", std::process::id());
            let inbox = Inbox::connect(url, &group).await?;
            Some(consume(&node, &pool, Some(inbox), &group, args.messages).await?)
        }
        None => None,
    };
    node.stop().await;

    let us = |secs: f64| secs * 1e6 / args.messages as f64;
    let rate = |secs: f64| args.messages as f64 / secs;
    let report = json!({
        "messages": args.messages,
        "concurrency": args.concurrency,
        "db": backend.name(),
        "direct_send_msgs_per_sec": rate(direct),
        "outbox_relay_msgs_per_sec": rate(relayed),
        "relay_ratio": direct / relayed,
        "plain_handler_us_per_msg": us(plain),
        "sql_inbox_us_per_msg": us(sql_inbox),
        "sql_inbox_ratio": sql_inbox / plain,
        "redis_inbox_us_per_msg": redis.map(us),
        "redis_inbox_ratio": redis.map(|r| r / plain),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{:<28} {:>12} {:>10}", "", "value", "vs base");
        println!("{:<28} {:>9.0}/s {:>10}", "direct send", rate(direct), "1.00");
        println!(
            "{:<28} {:>9.0}/s {:>10.2}",
            "outbox relay",
            rate(relayed),
            rate(relayed) / rate(direct)
        );
        println!("{:<28} {:>9.0}µs {:>10}", "plain handler", us(plain), "1.00");
        println!(
            "{:<28} {:>9.0}µs {:>10.2}",
            format!("{} inbox", backend.name()),
            us(sql_inbox),
            sql_inbox / plain
        );
        if let Some(r) = redis {
            println!("{:<28} {:>9.0}µs {:>10.2}", "redis inbox", us(r), r / plain);
        }
    }
    Ok(())
}

/// Seconds for `n` sync sends by `c` tasks.
async fn direct(producer: &Arc<Producer>, n: u64, c: u64) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (p, next) = (producer.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let r = p
                    .send(
                        "bench-direct",
                        Message {
                            body: body(i),
                            ..Message::default()
                        },
                    )
                    .await?;
                ensure!(r.status == waybill_client::SendStatus::SendOk, "send {i}: {}", r.status);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds for a relay to send `n` enqueued rows.
async fn relay(pool: &AnyPool, a: &OutboxBench, producer: Arc<Producer>) -> anyhow::Result<f64> {
    for chunk in 0..a.messages.div_ceil(500) {
        let mut tx = pool.begin().await?;
        for i in chunk * 500..((chunk + 1) * 500).min(a.messages) {
            outbox::enqueue(
                &mut *tx,
                "bench-outbox",
                Message {
                    body: body(i),
                    ..Message::default()
                },
            )
            .await?;
        }
        tx.commit().await?;
    }
    let mut opts = RelayOptions::new(a.db.clone());
    opts.batch = u32::try_from(a.concurrency).unwrap_or(u32::MAX);
    let start = Instant::now();
    let relay = Relay::start(opts, producer).await?;
    let mut stats = relay.watch();
    while stats.borrow().sent < a.messages {
        ensure!(
            start.elapsed() < PHASE_LIMIT,
            "the relay sent {} of {} rows",
            stats.borrow().sent,
            a.messages
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), stats.changed()).await;
    }
    let secs = start.elapsed().as_secs_f64();
    relay.shutdown().await;
    let s = outbox::status(pool).await?;
    ensure!(
        s.sent == a.messages as i64 && s.pending == 0,
        "outbox after the relay: {s:?}"
    );
    Ok(secs)
}

/// Seconds for group `group` to handle every message of `bench-inbox`.
async fn consume(node: &OwnNode, pool: &AnyPool, inbox: Option<Inbox>, group: &str, n: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let d2 = done.clone();
    let pool = pool.clone();
    let mut o = ConsumerOptions::new(node.broker.clone(), group, "bench-inbox");
    if let Some(i) = &inbox {
        o = i.declare(o);
    }
    let start = Instant::now();
    let consumer = PushConsumer::start(o, move |d: Delivered| {
        let (inbox, pool, d2) = (inbox.clone(), pool.clone(), d2.clone());
        async move {
            let r = handle(inbox.as_ref(), &pool, d).await;
            if r == ConsumeResult::Success {
                d2.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
    })
    .await?;
    while done.load(Ordering::Relaxed) < n {
        ensure!(
            start.elapsed() < PHASE_LIMIT,
            "{group} handled {} of {n}",
            done.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    consumer.shutdown().await;
    Ok(secs)
}

async fn handle(inbox: Option<&Inbox>, pool: &AnyPool, d: Delivered) -> ConsumeResult {
    let insert = "INSERT INTO bench_effects (order_key) VALUES ($1)";
    match inbox {
        None => match sqlx::query(insert).bind(d.message.key.clone()).execute(pool).await {
            Ok(_) => ConsumeResult::Success,
            Err(e) => ConsumeResult::reconsume_later(e),
        },
        Some(i) if i.backend() == "redis" => {
            let pool = pool.clone();
            i.handle(d, |d| async move {
                match sqlx::query(insert).bind(d.message.key.clone()).execute(&pool).await {
                    Ok(_) => ConsumeResult::Success,
                    Err(e) => ConsumeResult::reconsume_later(e),
                }
            })
            .await
        }
        Some(i) => {
            i.handle_in_tx(d, |conn, d| {
                Box::pin(async move {
                    sqlx::query(insert)
                        .bind(d.message.key.clone())
                        .execute(&mut *conn)
                        .await
                        .map(|_| ())
                })
            })
            .await
        }
    }
}
