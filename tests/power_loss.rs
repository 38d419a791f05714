//! Power-loss durability, simulated with the fault-injecting file system.
//!
//! Contract under test:
//! - `Flush::Sync`: an acknowledged (`SEND_OK`) message was covered by a
//!   successful fsync, so no power loss can take it: zero acked lost, whether
//!   the unsynced tail vanishes or is torn mid-record.
//! - `Flush::Async`: acknowledged after the write; exactly the messages an
//!   fsync had not yet covered are lost, everything fsynced survives, and
//!   recovery serves no torn record.
//!
//! The store runs in-process on `FaultFs`; `power_loss()` drops every
//! unsynced byte (or keeps a random prefix of it) and kills the crashed
//! store's file handles, then a new store recovers from what is "on disk".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use waybill::broker::{Broker, BrokerOptions, MessageId, Outgoing, SendStatus};
use waybill::storage::faultfs::{DurableFile, FaultFs, PowerLoss, Stall};
use waybill::storage::{DamageKind, Flush, NewMessage, Store, StoreOptions};

const DATA: &str = "/data";

fn options(flush: Flush) -> StoreOptions {
    let mut o = StoreOptions::new(DATA, flush);
    // Small segments: the run rolls many, so unsynced segment creation and
    // sealed-segment syncs are exercised too.
    o.segment_bytes = 64 * 1024;
    // Frequent checkpoints so recovery starts from a mid-run checkpoint.
    o.index_interval = Duration::from_millis(20);
    o
}

fn body_for(producer: usize, seq: usize) -> Vec<u8> {
    let pad = (producer * 31 + seq * 17) % 700;
    format!("p{producer}-m{seq}-{}", "z".repeat(pad)).into_bytes()
}

type Acked = Arc<Mutex<Vec<(MessageId, Vec<u8>)>>>;

/// Runs `producers` sync-flush senders until at least `crash_after` acks,
/// then cuts the power while they are still sending.
async fn sync_run_with_power_loss(mode: PowerLoss) -> anyhow::Result<()> {
    let fs = FaultFs::new();
    let store = Arc::new(Store::open(Arc::new(fs.clone()), options(Flush::Sync))?);
    let broker = Arc::new(Broker::new(
        store.clone(),
        BrokerOptions {
            sync_flush_timeout: Duration::from_secs(5),
            queues_per_topic: 4,
            ..BrokerOptions::default()
        },
    )?);
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..32 {
        let (broker, acked, stop) = (broker.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            for seq in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = body_for(p, seq);
                let sent = broker
                    .send(Outgoing {
                        topic: "power".into(),
                        key: Some(format!("k{p}-{seq}")),
                        body: body.clone(),
                        ..Outgoing::default()
                    })
                    .await;
                match sent {
                    Ok(r) if r.status == SendStatus::SendOk => {
                        if let Ok(mut a) = acked.lock() {
                            a.push((r.id, body));
                        }
                    }
                    // After the plug is pulled: I/O errors or FLUSH_DISK_TIMEOUT.
                    _ => break,
                }
            }
        }));
    }
    while acked.lock().map(|a| a.len()).unwrap_or(0) < 1500 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!("--- power loss ({mode:?}) with producers mid-stream");
    fs.power_loss(mode);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    drop(broker);
    drop(store); // the crashed store's threads fail on dead handles and stop

    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let store = Arc::new(Store::open(Arc::new(fs.reboot()), options(Flush::Sync))?);
    let broker = Broker::new(store.clone(), BrokerOptions::default())?;
    let mut lost = Vec::new();
    for (id, body) in &acked {
        match broker.get(id)? {
            Some(m) if &m.body == body => {}
            other => lost.push((id.to_string(), other.is_some())),
        }
    }
    println!(
        "sync flush, {mode:?}: acknowledged {}, lost {}",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged messages lost: {lost:?}");
    assert!(
        store.damage().iter().all(|d| d.kind == DamageKind::TornTail),
        "power loss must look like a torn tail, not corruption: {:?}",
        store.damage()
    );
    // Keys were re-indexed by recovery.
    let (id, _) = &acked[acked.len() / 2];
    let m = broker.get(id)?.ok_or_else(|| anyhow::anyhow!("vanished"))?;
    let key = m.key.clone().unwrap_or_default();
    assert_eq!(broker.find_by_key(&key, 10).len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sync_flush_when_power_fails_and_unsynced_bytes_vanish_should_lose_no_acknowledged_message(
) -> anyhow::Result<()> {
    sync_run_with_power_loss(PowerLoss::DropUnsynced).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sync_flush_when_power_fails_mid_write_tearing_records_should_lose_no_acknowledged_message(
) -> anyhow::Result<()> {
    sync_run_with_power_loss(PowerLoss::Tear { seed: 0x9e37_79b9 }).await
}

/// Global log range `[from, to)` that was durable at the crash, per segment.
fn durable_ranges(report: &BTreeMap<PathBuf, DurableFile>) -> Vec<(u64, u64)> {
    let log_dir = Path::new(DATA).join("log");
    report
        .iter()
        .filter(|(p, _)| p.parent() == Some(log_dir.as_path()))
        .filter_map(|(p, f)| {
            let base: u64 = p.file_stem()?.to_str()?.parse().ok()?;
            Some((base, base + f.durable_len))
        })
        .collect()
}

/// Acked messages (id, frame end, body), the recovered store, and the log
/// ranges that were durable at the crash.
type AsyncRun = (Vec<(MessageId, u64, Vec<u8>)>, Store, Vec<(u64, u64)>);

/// Async flush: acked after write, fsynced every interval. Appends run on a
/// thread until a flush has happened and unsynced data is pending, then the
/// power goes.
fn async_run(mode: PowerLoss) -> anyhow::Result<AsyncRun> {
    let fs = FaultFs::new();
    let interval = Duration::from_millis(100);
    let store = Store::open(Arc::new(fs.clone()), options(Flush::Async { interval }))?;
    let mut acked = Vec::new();
    let mut seq = 0usize;
    let report = loop {
        let body = body_for(0, seq);
        let a = store.append(NewMessage {
            topic: "power".into(),
            queue_id: (seq % 4) as u32,
            key: Some(format!("k{seq}")),
            body: body.clone(),
            born_ms: 0,
            ..NewMessage::default()
        })?;
        acked.push((
            MessageId {
                node: a.node,
                epoch: a.epoch,
                pos: a.pos,
            },
            a.end,
            body,
        ));
        seq += 1;
        let s = store.stats();
        // At least one fsync happened and a good amount is not yet synced.
        if s.flushed > 0 && s.log_end > s.flushed + 32 * 1024 {
            break fs.power_loss(mode);
        }
        if seq.is_multiple_of(64) {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    drop(store);
    let store = Store::open(Arc::new(fs.reboot()), options(Flush::Async { interval }))?;
    Ok((acked, store, durable_ranges(&report)))
}

fn was_durable(ranges: &[(u64, u64)], pos: u64, end: u64) -> bool {
    ranges.iter().any(|(from, to)| *from <= pos && end <= *to)
}

#[test]
fn given_async_flush_when_power_fails_should_lose_exactly_the_unsynced_messages() -> anyhow::Result<()> {
    let (acked, store, ranges) = async_run(PowerLoss::DropUnsynced)?;
    let broker = Broker::new(Arc::new(store), BrokerOptions::default())?;
    let (mut kept, mut lost) = (0, 0);
    for (id, end, body) in &acked {
        let got = broker.get(id)?;
        if was_durable(&ranges, id.pos, *end) {
            assert_eq!(got.map(|m| m.body), Some(body.clone()), "fsynced message {id} lost");
            kept += 1;
        } else {
            assert!(
                got.is_none(),
                "unsynced message {id} survived a drop-everything power loss"
            );
            lost += 1;
        }
    }
    println!(
        "async flush, drop unsynced: acknowledged {}, fsynced and kept {kept}, unsynced and lost {lost}",
        acked.len()
    );
    assert!(kept > 0 && lost > 0, "the run must straddle an fsync");
    assert!(broker.store().damage().iter().all(|d| d.kind == DamageKind::TornTail));
    Ok(())
}

#[test]
fn given_async_flush_when_power_tears_the_tail_should_keep_fsynced_messages_and_serve_no_torn_record(
) -> anyhow::Result<()> {
    let (acked, store, ranges) = async_run(PowerLoss::Tear { seed: 7 })?;
    let end = store.stats().log_end;
    let broker = Broker::new(Arc::new(store), BrokerOptions::default())?;
    let (mut durable, mut torn_survivors) = (0, 0);
    for (id, msg_end, body) in &acked {
        let got = broker.get(id)?;
        if was_durable(&ranges, id.pos, *msg_end) {
            assert_eq!(got.map(|m| m.body), Some(body.clone()), "fsynced message {id} lost");
            durable += 1;
        } else if let Some(m) = got {
            // Part of the unsynced tail reached the disk: only whole,
            // CRC-valid records may come back, never a torn one.
            assert_eq!(&m.body, body);
            assert!(*msg_end <= end);
            torn_survivors += 1;
        }
    }
    println!("async flush, torn tail: fsynced {durable}, unsynced but whole {torn_survivors}, log end {end}");
    assert!(durable > 0);
    // A new append after recovery lands on a clean boundary and reads back.
    let r = broker.store().append(NewMessage {
        topic: "power".into(),
        body: b"after".to_vec(),
        ..NewMessage::default()
    })?;
    assert_eq!(r.pos, end);
    assert_eq!(broker.store().read(r.pos)?.body, b"after");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sync_flush_when_fsync_fails_should_answer_flush_disk_timeout_and_refuse_writes() -> anyhow::Result<()> {
    let fs = FaultFs::new();
    let store = Arc::new(Store::open(Arc::new(fs.clone()), options(Flush::Sync))?);
    let broker = Broker::new(store.clone(), BrokerOptions::default())?;
    let send = |body: &'static str| Outgoing {
        topic: "eio".into(),
        body: body.as_bytes().to_vec(),
        ..Outgoing::default()
    };
    assert_eq!(broker.send(send("before")).await?.status, SendStatus::SendOk);
    fs.fail_syncs(1);
    // The fsync covering this message fails: never SEND_OK (fsyncgate).
    let r = broker.send(send("during")).await?;
    assert_eq!(r.status, SendStatus::FlushDiskTimeout);
    assert!(store.failure().is_some());
    // No retry-and-pretend: later writes are refused outright.
    assert!(broker.send(send("after")).await.is_err());
    Ok(())
}

/// Sync flush with tiny segments and no index checkpoint during the test.
fn roll_options() -> StoreOptions {
    let mut o = StoreOptions::new(DATA, Flush::Sync);
    o.segment_bytes = 4096;
    o.index_interval = Duration::from_secs(3600);
    o
}

/// Frames appended as (position, end, body).
type Appends = Vec<(u64, u64, Vec<u8>)>;

/// Holds the flusher inside its write of the first chunk, then appends
/// until the segment rolls and the new one has frames too. Returns the
/// store, the stall and what was appended (position, end, body).
fn roll_during_a_flusher_write(fs: &FaultFs) -> anyhow::Result<(Store, Arc<Stall>, Appends)> {
    let store = Store::open(Arc::new(fs.clone()), roll_options())?;
    let stall = fs.stall_next_write();
    let mut appended = Vec::new();
    let append = |appended: &mut Appends, i: usize| -> anyhow::Result<()> {
        let body = format!("roll-{i}-{}", "r".repeat(900)).into_bytes();
        let a = store.append(NewMessage {
            topic: "roll".into(),
            body: body.clone(),
            ..NewMessage::default()
        })?;
        appended.push((a.pos, a.end, body));
        Ok(())
    };
    append(&mut appended, 0)?;
    anyhow::ensure!(
        stall.wait_until_held(Duration::from_secs(10)),
        "the flusher never started its write"
    );
    // Fill the first segment until it rolls, then one frame in the next.
    let mut i = 1;
    while store.stats().segments < 2 {
        append(&mut appended, i)?;
        i += 1;
    }
    append(&mut appended, i)?;
    Ok((store, stall, appended))
}

#[test]
fn given_a_segment_roll_during_a_flusher_write_when_the_process_dies_should_leave_no_hole_and_report_no_corruption(
) -> anyhow::Result<()> {
    let fs = FaultFs::new();
    let (store, stall, appended) = roll_during_a_flusher_write(&fs)?;
    // SIGKILL while the flusher's chunk is still on its way: whatever other
    // bytes reached the files stay (page cache).
    println!(
        "--- process crash with the flusher's first write held, {} frames appended",
        appended.len()
    );
    fs.power_loss(PowerLoss::ProcessCrash);
    stall.release();
    drop(store);
    let store = Store::open(Arc::new(fs.reboot()), roll_options())?;
    assert!(
        store.damage().iter().all(|d| d.kind != DamageKind::Corrupt),
        "unflushed bytes reported as corrupt (a hole before later frames): {:?}",
        store.damage()
    );
    // Nothing was acknowledged; whatever is served is a whole prefix.
    let (msgs, _) = store.read_queue("roll", 0, 0, 1000)?;
    for (i, (_, pos, m)) in msgs.iter().enumerate() {
        assert_eq!((*pos, &m.body), (appended[i].0, &appended[i].2), "record {i}");
    }
    let all: u64 = store.queues().iter().map(|(_, _, n)| n).sum();
    assert_eq!(all, msgs.len() as u64, "records served outside the prefix");
    Ok(())
}

#[test]
fn given_a_segment_roll_during_a_flusher_write_when_the_write_completes_should_store_every_frame_in_place(
) -> anyhow::Result<()> {
    let fs = FaultFs::new();
    let (store, stall, appended) = roll_during_a_flusher_write(&fs)?;
    stall.release();
    let end = appended.last().map_or(0, |a| a.1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().flushed < end {
        anyhow::ensure!(std::time::Instant::now() < deadline, "never flushed");
        std::thread::sleep(Duration::from_millis(1));
    }
    // A power loss now loses nothing: every frame was written and synced.
    fs.power_loss(PowerLoss::DropUnsynced);
    drop(store);
    let store = Store::open(Arc::new(fs.reboot()), roll_options())?;
    assert!(store.damage().is_empty(), "{:?}", store.damage());
    let (msgs, _) = store.read_queue("roll", 0, 0, 1000)?;
    assert_eq!(msgs.len(), appended.len());
    for (i, (_, pos, m)) in msgs.iter().enumerate() {
        assert_eq!((*pos, &m.body), (appended[i].0, &appended[i].2), "record {i}");
    }
    Ok(())
}
