//! Loss windows under async flush and power loss, in process.
//!
//! Contract: after any crash, every acknowledged message the log no longer
//! holds is either named `lost` by the audit or lies inside a loss window
//! the audit reported — its boot, at or past the window's log position,
//! acknowledged within its time range — and no window holds more messages
//! than its `max_count`.
//!
//! Setup: the message store is on the fault-injecting file system, the
//! trace store (SQLite) on the real disk, which survives every crash. Each
//! boot runs on a tokio runtime of its own, with the production start path
//! (`Tracer::spawn` with the start-up audit). Producers send until the crash.
//! The tracer is never flushed: what sits in its queue and its batch is what
//! the crash takes.
//!
//! The crash, in this order: the boot's runtime is shut down, so every task
//! — producers and the trace writer — stops at its next await (a commit
//! already handed to SQLite may still land, as it could when a real process
//! dies mid-commit; no *new* write starts); then the plug is pulled on the
//! fault FS. The store's own flusher thread may fsync in between, which
//! only moves the crash a moment later for the log.
//!
//! Also here: the rule that keeps a window's bound through any outage — a
//! send the tracer sheds is fsynced before its answer under async flush.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use waybill::broker::{Broker, BrokerOptions, MessageId, Outgoing, Wiring};
use waybill::storage::faultfs::{FaultFs, PowerLoss};
use waybill::storage::{Flush, Store, StoreOptions};
use waybill::trace::sink::Subscribers;
use waybill::trace::windows::{self, Window};
use waybill::trace::{audit, Options, Tracer};
use waybill_client::SendStatus;

/// Boots that end in a power loss with SQLite (one more boot checks the
/// last); the PostgreSQL run does fewer.
const CYCLES: u64 = 10;
/// Concurrent in-process producers.
const PRODUCERS: usize = 4;
/// The tracer's bound on unwritten acknowledged messages: small, so that
/// the unpaced boots overflow it and the shed path (fsync before the
/// answer) runs too.
const MAX_UNWRITTEN: u64 = 5000;
/// Paced producers pause 1 ms after this many sends each (a load the trace
/// writer keeps up with); every third boot is unpaced (it does not).
const PACE: u64 = 8;

/// An acknowledged send: its id and when the producer had the answer.
#[derive(Debug, Clone)]
struct Acked {
    id: MessageId,
    at_ms: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What one check found.
#[derive(Debug, Default)]
struct Counts {
    acked: usize,
    gone: usize,
    named: usize,
    in_windows: usize,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Every acknowledged message of the last boot that the log lost: named,
/// or inside a window (and each window within its bound).
async fn check(tracer: &Tracer, store: &Store, acked: &[Acked], boot: u32, crash_ms: i64) -> anyhow::Result<Counts> {
    let pool = tracer.pool()?;
    let named: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT message_id FROM trace_events WHERE outcome = 'lost'")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let all = windows::list(pool, 1000).await?;
    let wins: Vec<&Window> = all.iter().filter(|w| w.epoch == boot).collect();
    let mut per_window = vec![0u64; wins.len()];
    let mut c = Counts {
        acked: acked.len(),
        ..Counts::default()
    };
    for a in acked {
        let present = matches!(store.read(a.id.pos), Ok(m) if m.node == a.id.node && m.epoch == a.id.epoch);
        if present {
            continue;
        }
        c.gone += 1;
        if named.contains(&a.id.to_string()) {
            c.named += 1;
            continue;
        }
        let inside = wins.iter().position(|w| {
            w.holds(a.id.node, a.id.epoch, a.id.pos) && w.from_ms.is_none_or(|f| a.at_ms >= f) && a.at_ms <= w.to_ms
        });
        let Some(i) = inside else {
            anyhow::bail!(
                "{} acknowledged at {} is gone, not named lost, and in no loss window: {wins:?}",
                a.id,
                a.at_ms
            );
        };
        per_window[i] += 1;
        c.in_windows += 1;
    }
    for (w, n) in wins.iter().zip(&per_window) {
        println!(
            "  window {} boot {}: from {} ms before the crash to the restart {} ms after it, log positions from {}{}, \
             max_count {:?}, holds {n} gone unnamed",
            w.kind,
            w.epoch,
            w.from_ms.map_or(-1, |f| crash_ms - f),
            w.to_ms - crash_ms,
            w.from_pos,
            w.to_pos.map(|t| format!(" to {t}")).unwrap_or_default(),
            w.max_count
        );
        if let Some(max) = w.max_count {
            anyhow::ensure!(*n <= max, "window {w:?} holds {n} > max_count {max}");
        }
    }
    Ok(c)
}

/// `cycles` boots that end in a power loss, each checked at the next boot.
fn power_losses(db: &str, cycles: u64) -> anyhow::Result<()> {
    let mut fs = FaultFs::new();
    let mut opts = StoreOptions::new(
        "/data",
        Flush::Async {
            interval: Duration::from_millis(50),
        },
    );
    opts.segment_bytes = 256 * 1024;
    let mut previous: Vec<Acked> = Vec::new();
    let mut crash_ms = 0;
    let mut total = Counts::default();
    let mut shed = 0;
    for cycle in 0..=cycles {
        let rt = runtime()?;
        let store = Arc::new(Store::open(Arc::new(fs.clone()), opts.clone())?);
        let tracer_opts = Options {
            max_unwritten: MAX_UNWRITTEN,
            audit: Some(audit::Start::at_open(&store, None)),
        };
        let tracer = {
            let _in = rt.enter();
            Tracer::spawn(db, store.clone(), tracer_opts)?
        };
        let broker = Arc::new(Broker::wired(
            store.clone(),
            BrokerOptions::default(),
            Wiring::events(Subscribers::tracing(tracer.clone())),
        )?);
        rt.block_on(async {
            let begun = std::time::Instant::now();
            while tracer.health().audit != "done" {
                anyhow::ensure!(
                    begun.elapsed() < Duration::from_secs(60),
                    "audit never finished: {:?}",
                    tracer.health()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })?;
        if !previous.is_empty() {
            let boot = previous[0].id.epoch;
            let c = rt.block_on(check(&tracer, &store, &previous, boot, crash_ms))?;
            println!(
                "boot {boot}: acknowledged {}, gone {}, named lost {}, inside windows {}",
                c.acked, c.gone, c.named, c.in_windows
            );
            total.acked += c.acked;
            total.gone += c.gone;
            total.named += c.named;
            total.in_windows += c.in_windows;
        }
        if cycle == cycles {
            break;
        }
        let paced = cycle % 3 != 2;
        println!(
            "--- boot {}: produce ({}) until the power goes",
            store.epoch(),
            if paced { "paced" } else { "unpaced" }
        );
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        for p in 0..PRODUCERS {
            let (broker, acked, stop) = (broker.clone(), acked.clone(), stop.clone());
            rt.spawn(async move {
                for seq in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = broker
                        .send(Outgoing {
                            topic: "windows".into(),
                            key: Some(format!("p{p}-{seq}")),
                            body: vec![b'w'; 200],
                            ..Outgoing::default()
                        })
                        .await;
                    match sent {
                        Ok(r) if r.status == SendStatus::SendOk => {
                            let at_ms = now_ms();
                            if let Ok(mut a) = acked.lock() {
                                a.push(Acked { id: r.id, at_ms });
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    if paced && seq % PACE == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    } else if seq % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200 + (cycle * 97) % 400));
        println!(
            "--- power loss (trace events shed in this boot: {})",
            tracer.shed_count()
        );
        shed += tracer.shed_count();
        crash_ms = now_ms();
        rt.shutdown_timeout(Duration::from_secs(10));
        let mode = if cycle % 2 == 0 {
            PowerLoss::DropUnsynced
        } else {
            PowerLoss::Tear { seed: cycle }
        };
        fs.power_loss(mode);
        stop.store(true, Ordering::Relaxed);
        drop(tracer);
        drop(broker);
        drop(store);
        fs = fs.reboot();
        previous = acked.lock().map(|a| a.clone()).unwrap_or_default();
        anyhow::ensure!(!previous.is_empty(), "nothing acknowledged in cycle {cycle}");
    }
    println!(
        "{cycles} power losses: acknowledged {}, gone {}, named lost {}, inside loss windows {}; trace events shed {shed}",
        total.acked, total.gone, total.named, total.in_windows
    );
    assert!(total.gone > 0, "the power losses must take acknowledged messages");
    assert!(
        total.in_windows > 0,
        "some acknowledgements must still have been in the tracer's queue at a crash"
    );
    assert_eq!(total.gone, total.named + total.in_windows);
    Ok(())
}

#[test]
fn given_async_flush_and_power_losses_every_gone_acknowledged_message_is_named_or_inside_a_loss_window(
) -> anyhow::Result<()> {
    // Drops that need a runtime (pool connections) find this one.
    let outer = runtime()?;
    let _ctx = outer.enter();
    let tmp = tempfile::tempdir()?;
    power_losses(&format!("sqlite://{}", tmp.path().join("trace.db").display()), CYCLES)
}

#[test]
fn given_a_postgres_trace_store_and_power_losses_every_gone_acknowledged_message_is_named_or_inside_a_loss_window(
) -> anyhow::Result<()> {
    let outer = runtime()?;
    let _ctx = outer.enter();
    let db = outer.block_on(common::pg_schema("wbw"))?;
    power_losses(&db, 3)
}

/// The rule that keeps the bound through any trace store outage: a send the
/// tracer sheds is fsynced before its answer, even under async flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_tracer_that_sheds_under_async_flush_each_shed_acknowledgement_is_fsynced_before_its_answer(
) -> anyhow::Result<()> {
    const BOUND: u64 = 10;
    let fs = FaultFs::new();
    // No periodic fsync within the test: only the shed path syncs.
    let opts = StoreOptions::new(
        "/data",
        Flush::Async {
            interval: Duration::from_secs(3600),
        },
    );
    let store = Arc::new(Store::open(Arc::new(fs.clone()), opts.clone())?);
    // A trace store on a closed port: the tracer queues up to its bound.
    let tracer = Tracer::spawn(
        "postgres://postgres@127.0.0.1:1/x",
        store.clone(),
        Options {
            max_unwritten: BOUND,
            audit: None,
        },
    )?;
    let broker = Broker::wired(
        store.clone(),
        BrokerOptions::default(),
        Wiring::events(Subscribers::tracing(tracer.clone())),
    )?;
    let mut acked = Vec::new();
    for i in 0..50u64 {
        let r = broker
            .send(Outgoing {
                topic: "shed".into(),
                body: vec![b's'; 100],
                ..Outgoing::default()
            })
            .await?;
        assert_eq!(r.status, SendStatus::SendOk);
        let flushed = store.stats().flushed;
        if i < BOUND {
            assert_eq!(flushed, 0, "send {i} was queued: answered without an fsync");
        } else {
            assert!(
                flushed > r.id.pos,
                "send {i} was shed: answered only after an fsync covered it"
            );
        }
        acked.push(r.id);
    }
    println!(
        "queued {BOUND}, shed {} (each fsynced before its answer)",
        tracer.shed_count()
    );
    assert_eq!(tracer.shed_count(), 50 - BOUND);
    fs.power_loss(PowerLoss::DropUnsynced);
    drop(broker);
    drop(tracer);
    drop(store);
    let store = Store::open(Arc::new(fs.reboot()), opts)?;
    for id in &acked[BOUND as usize..] {
        assert!(
            store.read(id.pos).is_ok(),
            "shed and acknowledged {id} survives the power loss"
        );
    }
    Ok(())
}
