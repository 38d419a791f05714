//! Recovery from a torn tail and from bit rot, on real files.
//!
//! Contract: a torn tail (bytes past the flushed mark that are not a whole
//! valid record) is cut and every complete record before it stays. A flipped
//! byte inside flushed data is reported (log, `/healthz` detail, metric),
//! the damaged record is never served as data, and the valid records on both
//! sides of it stay readable; new appends keep working.

#[path = "common/mod.rs"]
mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use waybill::api::{app, AppState, DEFAULT_BODY_LIMIT};
use waybill::broker::{Broker, BrokerOptions, MessageId};
use waybill::storage::fs::RealFs;
use waybill::storage::record::{self, StoredMessage};
use waybill::storage::{Appended, DamageKind, Flush, NewMessage, StorageError, Store, StoreOptions};

fn open(dir: &Path) -> anyhow::Result<Store> {
    let mut o = StoreOptions::new(dir, Flush::Sync);
    o.segment_bytes = 16 * 1024;
    o.index_interval = Duration::from_millis(50);
    Ok(Store::open(Arc::new(RealFs), o)?)
}

fn body(i: usize) -> Vec<u8> {
    format!("message {i} {}", "b".repeat(100 + i % 50)).into_bytes()
}

/// Appends `n` messages and closes the store cleanly (final flush and
/// checkpoint), returning where each landed.
fn fill(dir: &Path, n: usize) -> anyhow::Result<Vec<Appended>> {
    let store = open(dir)?;
    let mut out = Vec::new();
    for i in 0..n {
        out.push(store.append(NewMessage {
            topic: "rec".into(),
            queue_id: (i % 2) as u32,
            key: Some(format!("key-{i}")),
            body: body(i),
            ..NewMessage::default()
        })?);
    }
    store.close();
    Ok(out)
}

fn segment_of(dir: &Path, pos: u64) -> anyhow::Result<(std::path::PathBuf, u64)> {
    let mut best = None;
    for e in std::fs::read_dir(dir.join("log"))? {
        let p = e?.path();
        let base: u64 = p
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if base <= pos && best.as_ref().is_none_or(|(_, b)| base > *b) {
            best = Some((p, base));
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no segment for {pos}"))
}

fn flip(path: &Path, at: u64) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)?;
    f.write_all_at(&[b[0] ^ 0x40], at)?;
    f.sync_all()?;
    Ok(())
}

async fn get(store: Arc<Store>, uri: &str) -> anyhow::Result<(StatusCode, String)> {
    let broker = Arc::new(Broker::new(store, BrokerOptions::default())?);
    let resp = app(AppState::new(broker), DEFAULT_BODY_LIMIT)
        .oneshot(Request::get(uri).body(Body::empty())?)
        .await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[test]
fn given_a_torn_tail_when_reopened_should_cut_it_and_keep_every_complete_record() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let written = fill(tmp.path(), 300)?;
    let end = written.last().map(|a| a.end).unwrap_or(0);
    // A crash mid-write: the first half of one more frame reached the file.
    let frame = record::encode(&StoredMessage {
        topic: "rec".into(),
        body: vec![7; 500],
        ..StoredMessage::default()
    })?;
    let (seg, base) = segment_of(tmp.path(), end)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)?
        .write_all_at(&frame[..frame.len() / 2], end - base)?;

    let store = open(tmp.path())?;
    assert_eq!(store.stats().log_end, end, "torn bytes must be cut");
    assert_eq!(std::fs::metadata(&seg)?.len(), end - base);
    assert!(store.damage().iter().all(|d| d.kind == DamageKind::TornTail));
    assert_eq!(store.damage().len(), 1);
    for (i, a) in written.iter().enumerate() {
        assert_eq!(store.read(a.pos)?.body, body(i), "record {i}");
    }
    // Appends continue on a clean boundary and survive another restart.
    let next = store.append(NewMessage {
        topic: "rec".into(),
        body: b"after".to_vec(),
        ..NewMessage::default()
    })?;
    assert_eq!(next.pos, end);
    store.close();
    drop(store);
    let store = open(tmp.path())?;
    assert!(store.damage().is_empty());
    assert_eq!(store.read(next.pos)?.body, b"after");
    assert_eq!(store.stats().log_end, next.end);
    Ok(())
}

/// Flips one byte inside record `victim` at `offset_in_frame`, reopens and
/// checks the contract.
async fn flipped_byte_case(victim: usize, offset_in_frame: impl Fn(&Appended) -> u64) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let written = fill(tmp.path(), 400)?;
    let hit = written[victim];
    let (seg, base) = segment_of(tmp.path(), hit.pos)?;
    flip(&seg, hit.pos - base + offset_in_frame(&hit))?;

    let store = Arc::new(open(tmp.path())?);
    let corrupt: Vec<_> = store
        .damage()
        .iter()
        .filter(|d| d.kind == DamageKind::Corrupt)
        .collect();
    assert_eq!(corrupt.len(), 1, "exactly one corrupt region: {:?}", store.damage());
    assert!(corrupt[0].from <= hit.pos && hit.end <= corrupt[0].to);
    match store.read(hit.pos) {
        Err(StorageError::Corrupt { .. }) => {}
        other => panic!("corrupt record must not be served, got {other:?}"),
    }
    for (i, a) in written.iter().enumerate() {
        if i != victim {
            assert_eq!(store.read(a.pos)?.body, body(i), "neighbour {i} lost");
        }
    }
    // Reported over HTTP: health detail, metric, and a JSON error for the id.
    let (code, health) = get(store.clone(), "/healthz").await?;
    assert_eq!(code, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_str(&health)?;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["damage"][0]["kind"], "corrupt");
    let (_, metrics) = get(store.clone(), "/metrics").await?;
    assert!(metrics.contains("waybill_storage_damaged_regions{kind=\"corrupt\"} 1"));
    let id = MessageId {
        node: hit.node,
        epoch: hit.epoch,
        pos: hit.pos,
    };
    let (code, err) = get(store.clone(), &format!("/api/v1/messages/{id}")).await?;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(err.contains("corrupt"), "{err}");
    // Writes go on; the damage is still reported after another restart.
    let after = store.append(NewMessage {
        topic: "rec".into(),
        body: b"after".to_vec(),
        ..NewMessage::default()
    })?;
    store.close();
    drop(store);
    let store = open(tmp.path())?;
    assert_eq!(
        store.damage().iter().filter(|d| d.kind == DamageKind::Corrupt).count(),
        1
    );
    assert_eq!(store.read(after.pos)?.body, b"after");
    assert_eq!(store.read(written[victim + 1].pos)?.body, body(victim + 1));
    Ok(())
}

#[tokio::test]
async fn given_a_flipped_byte_in_a_record_body_mid_segment_should_report_it_and_keep_its_neighbours(
) -> anyhow::Result<()> {
    flipped_byte_case(150, |a| (a.end - a.pos) - 3).await
}

#[tokio::test]
async fn given_a_flipped_byte_in_a_record_header_should_resync_on_the_next_record() -> anyhow::Result<()> {
    // Byte 5 is inside the length field: the frame boundary itself is lost.
    flipped_byte_case(151, |_| 5).await
}

#[tokio::test]
async fn given_a_flipped_byte_in_the_last_flushed_record_should_report_it_not_truncate_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let written = fill(tmp.path(), 50)?;
    let last = written[49];
    let (seg, base) = segment_of(tmp.path(), last.pos)?;
    flip(&seg, last.pos - base + 20)?;
    let store = open(tmp.path())?;
    assert_eq!(
        store.stats().log_end,
        last.end,
        "flushed bytes are evidence, not a torn tail"
    );
    assert!(store.damage().iter().any(|d| d.kind == DamageKind::Corrupt));
    assert!(store.read(last.pos).is_err());
    assert_eq!(store.read(written[48].pos)?.body, body(48));
    Ok(())
}

// ---------------------------------------------------------------------------
// Forged records: a producer controls a message body, so a body may hold
// bytes that form whole valid frames. Recovery must never take them for
// records, whatever torn cut or flipped byte makes it look for the next one.
// ---------------------------------------------------------------------------

mod forge {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::common::Rng;
    use waybill::storage::faultfs::{FaultFs, PowerLoss};
    use waybill::storage::fs::Fs;
    use waybill::storage::record::{self, StoredMessage};
    use waybill::storage::{Appended, DamageKind, Flush, NewMessage, Store, StoreOptions};

    const DATA: &str = "/data";
    const OFFSETS: &str = "%OFFSETS%";

    fn options() -> StoreOptions {
        // Async flush with no fsync in the test's lifetime and no index
        // checkpoint after open: everything appended is past the checkpoint's
        // flushed and indexed marks, as after a SIGKILL within the index
        // interval (`--index-interval-ms 60000` in the report).
        let mut o = StoreOptions::new(
            DATA,
            Flush::Async {
                interval: Duration::from_secs(3600),
            },
        );
        o.index_interval = Duration::from_secs(3600);
        o.segment_bytes = 1 << 20;
        o
    }

    fn frame(topic: &str, queue_offset: u64, key: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(record::encode(&StoredMessage {
            node: 1,
            epoch: 1,
            born_ms: 1,
            stored_ms: 1,
            topic: topic.into(),
            queue_id: 0,
            queue_offset,
            key: Some(key.into()),
            body: body.to_vec(),
            ..StoredMessage::default()
        })?)
    }

    /// A body holding four forged frames: a record of a new topic, an offset
    /// commit moving group g1 past everything in victim/0, a victim record
    /// continuing its queue, and one claiming queue offset 30,000,000.
    fn attack_body() -> anyhow::Result<Vec<u8>> {
        let mut b = b"prefix:".to_vec();
        b.extend(frame("forged", 0, "forged-key", b"nobody sent this")?);
        b.extend(frame(OFFSETS, 0, "g1\u{1}victim\u{1}0", b"1000000")?);
        b.extend(frame("victim", 5, "forged-victim", b"forged victim")?);
        b.extend(frame("victim", 30_000_000, "forged-far", b"far")?);
        b.extend(b":suffix");
        Ok(b)
    }

    fn victim(i: usize) -> Vec<u8> {
        format!("victim message {i}").into_bytes()
    }

    fn append(store: &Store, topic: &str, key: &str, body: Vec<u8>) -> anyhow::Result<Appended> {
        Ok(store.append(NewMessage {
            topic: topic.into(),
            key: Some(key.into()),
            body,
            ..NewMessage::default()
        })?)
    }

    /// Five victim records, the attack, three more victim records; the
    /// store is left open (the caller crashes or closes it).
    fn write_log(fs: &FaultFs) -> anyhow::Result<(Store, Vec<Appended>, Appended)> {
        let store = Store::open(Arc::new(fs.clone()), options())?;
        let mut victims = Vec::new();
        for i in 0..5 {
            victims.push(append(&store, "victim", &format!("v{i}"), victim(i))?);
        }
        let attack = append(&store, "attack", "attack", attack_body()?)?;
        for i in 5..8 {
            victims.push(append(&store, "victim", &format!("v{i}"), victim(i))?);
        }
        Ok((store, victims, attack))
    }

    /// Nothing forged is served; what is served of victim/0 is a prefix of
    /// what was written, byte-identical; no placeholder was allocated.
    fn assert_nothing_forged(store: &Store, victims: &[Appended], case: &str) -> anyhow::Result<usize> {
        assert_eq!(store.queue_len("forged", 0), 0, "{case}: forged topic served");
        assert_eq!(store.queue_len(OFFSETS, 0), 0, "{case}: forged offset commit");
        for key in ["forged-key", "forged-victim", "forged-far"] {
            assert!(store.find_by_key(key, 10).is_empty(), "{case}: forged key {key} found");
        }
        let len = store.queue_len("victim", 0);
        assert!(len <= victims.len() as u64, "{case}: victim/0 has {len} entries");
        let (msgs, _) = store.read_queue("victim", 0, 0, 100)?;
        assert_eq!(msgs.len() as u64, len, "{case}: holes in victim/0");
        for (i, (off, pos, m)) in msgs.iter().enumerate() {
            assert_eq!((*off, *pos), (i as u64, victims[i].pos), "{case}: entry {i}");
            assert_eq!(m.body, victim(i), "{case}: victim {i} altered");
        }
        Ok(msgs.len())
    }

    #[test]
    fn given_a_body_of_forged_frames_when_the_tail_is_torn_anywhere_in_it_should_serve_nothing_forged(
    ) -> anyhow::Result<()> {
        let probe = FaultFs::new();
        let (_, _, attack) = write_log(&probe)?;
        let mut served_after_attack = 0;
        for cut in attack.pos..attack.end {
            let fs = FaultFs::new();
            let (crashed, victims, a) = write_log(&fs)?;
            assert_eq!((a.pos, a.end), (attack.pos, attack.end), "same layout every run");
            // SIGKILL: the page cache survives, the process does not (no
            // final flush, no checkpoint).
            fs.power_loss(PowerLoss::ProcessCrash);
            drop(crashed);
            let fs = fs.reboot();
            let seg = Path::new(DATA).join("log").join(format!("{:020}.log", 0));
            fs.open(&seg, false)?.set_len(cut)?;
            let store = Store::open(Arc::new(fs.clone()), options())?;
            let case = format!("cut at {cut} (attack frame {}..{})", a.pos, a.end);
            let served = assert_nothing_forged(&store, &victims, &case)?;
            assert_eq!(served, 5, "{case}: exactly the victims before the attack");
            assert_eq!(store.stats().log_end, a.pos, "{case}: cut at the torn frame");
            assert!(
                store.damage().iter().all(|d| d.kind == DamageKind::TornTail),
                "{case}: {:?}",
                store.damage()
            );
            served_after_attack += store.queue_len("attack", 0);
        }
        assert_eq!(served_after_attack, 0);
        println!("torn cuts tried: {}", attack.end - attack.pos);
        Ok(())
    }

    #[test]
    fn given_a_body_of_forged_frames_when_flushed_bytes_rot_before_it_should_resync_only_on_proven_records(
    ) -> anyhow::Result<()> {
        // Closed cleanly: the checkpoint covers the whole log as flushed and
        // indexed. Then one byte of the attack frame's header rots, so
        // recovery must find the next record: the forged frames in the body
        // are the first candidates it meets.
        let probe = FaultFs::new();
        let (_, _, attack) = write_log(&probe)?;
        for at in 0..record::HEADER_LEN as u64 {
            let fs = FaultFs::new();
            let (store, victims, a) = write_log(&fs)?;
            store.close();
            drop(store);
            let seg = Path::new(DATA).join("log").join(format!("{:020}.log", 0));
            fs.corrupt_byte(&seg, a.pos + at)?;
            let store = Store::open(Arc::new(fs.clone()), options())?;
            let case = format!("byte {at} of the attack frame rotted");
            assert_eq!(
                assert_nothing_forged(&store, &victims, &case)?,
                8,
                "{case}: neighbours kept"
            );
            let corrupt: Vec<_> = store
                .damage()
                .iter()
                .filter(|d| d.kind == DamageKind::Corrupt)
                .collect();
            assert_eq!(corrupt.len(), 1, "{case}: {:?}", store.damage());
            assert_eq!((corrupt[0].from, corrupt[0].to), (a.pos, a.end), "{case}");
        }
        assert!(attack.end > attack.pos);
        Ok(())
    }

    /// A random body: random bytes with valid-looking frames spliced in,
    /// claiming topics and queue offsets that exist or continue their queue.
    fn random_body(rng: &mut Rng, seq: usize) -> anyhow::Result<Vec<u8>> {
        let mut b = Vec::new();
        for _ in 0..rng.below(4) {
            let n = rng.below(40) as usize;
            b.extend((0..n).map(|_| rng.next() as u8));
            let topic = ["t0", "t1", OFFSETS, "forged"][rng.below(4) as usize];
            let offset = [0, seq as u64, seq as u64 + 1, u64::MAX][rng.below(4) as usize];
            b.extend(frame(topic, offset, &format!("forged-{seq}"), b"forged")?);
        }
        b.extend(format!("|{seq}|").bytes());
        Ok(b)
    }

    #[test]
    fn property_random_forged_bodies_and_random_torn_cuts_serve_exactly_a_prefix_of_the_acknowledged(
    ) -> anyhow::Result<()> {
        let mut rng = Rng(0x5eed_f00d_cafe_d00d);
        for case in 0..120 {
            let fs = FaultFs::new();
            let mut opts = options();
            opts.segment_bytes = 2048 + rng.below(4096); // several segments, rolled
            let store = Store::open(Arc::new(fs.clone()), opts.clone())?;
            let mut acked = Vec::new();
            for seq in 0..(10 + rng.below(60) as usize) {
                let topic = if rng.below(2) == 0 { "t0" } else { "t1" };
                let body = random_body(&mut rng, seq)?;
                let a = append(&store, topic, &format!("k{seq}"), body.clone())?;
                acked.push((topic, a, body));
            }
            // A power loss tearing each file's unsynced tail at a random
            // length (none of it was fsynced).
            fs.power_loss(PowerLoss::Tear { seed: rng.next() });
            drop(store);
            let fs = fs.reboot();
            let store = Store::open(Arc::new(fs), opts)?;
            let mut served = Vec::new();
            for (topic, queue, len) in store.queues() {
                let (msgs, _) = store.read_queue(&topic, queue, 0, len as usize + 1)?;
                assert_eq!(msgs.len() as u64, len, "case {case}: holes in {topic}/{queue}");
                served.extend(msgs.into_iter().map(|(_, pos, m)| (pos, m)));
            }
            served.sort_by_key(|(pos, _)| *pos);
            assert!(served.len() <= acked.len(), "case {case}: more served than written");
            for (i, (pos, m)) in served.iter().enumerate() {
                let (topic, a, body) = &acked[i];
                assert_eq!(
                    (*pos, m.topic.as_str(), &m.body),
                    (a.pos, *topic, body),
                    "case {case}: record {i} of the served log is not the {i}th written"
                );
            }
            let end = store.stats().log_end;
            let whole = acked.iter().take_while(|(_, a, _)| a.end <= end).count();
            assert_eq!(
                served.len(),
                whole,
                "case {case}: a whole record before the cut went missing"
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The same attack against the real binary, as it was reported: one message
// over the binary protocol whose body holds forged frames, SIGKILL before an
// index checkpoint covers it, the segment torn inside that body, restart.
// ---------------------------------------------------------------------------

mod forge_e2e {
    use std::path::Path;
    use std::process::Command;

    use waybill_client::producer::{Producer, ProducerOptions};
    use waybill_client::protocol::Message;

    use super::common::Node;
    use waybill::storage::record::{self, StoredMessage};

    /// Peak resident memory the restarted node may reach. A forged queue
    /// offset of 30,000,000 made recovery allocate ~700 MB of placeholders.
    const RSS_BOUND_KB: u64 = 256 * 1024;

    fn frame(topic: &str, queue_id: u32, queue_offset: u64, key: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(record::encode(&StoredMessage {
            node: 1,
            epoch: 1,
            topic: topic.into(),
            queue_id,
            queue_offset,
            key: Some(key.into()),
            body: body.to_vec(),
            ..StoredMessage::default()
        })?)
    }

    fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let dest = to.join(e.file_name());
            if e.file_type()?.is_dir() {
                copy_dir(&e.path(), &dest)?;
            } else {
                std::fs::copy(e.path(), dest)?;
            }
        }
        Ok(())
    }

    fn peak_rss_kb(pid: u32) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))
    }

    fn consume_all(node: &Node, group: &str) -> anyhow::Result<Vec<String>> {
        let out = Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args([
                "consume",
                "--broker",
                &node.broker,
                "--topic",
                "victim",
                "--group",
                group,
            ])
            .args(["--idle-exit-ms", "1500"])
            .output()?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut bodies = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            bodies.push(v["body"].as_str().unwrap_or_default().to_string());
        }
        bodies.sort();
        Ok(bodies)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_forged_frames_in_a_body_and_a_torn_cut_inside_it_the_restarted_node_serves_nothing_forged(
    ) -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("node");
        std::fs::create_dir_all(&dir)?;
        let mut node = Node::start(&dir, &["--index-interval-ms", "60000"])?;
        let producer = Producer::new(ProducerOptions::new(node.broker.clone()))?;
        let mut victims = Vec::new();
        for i in 0..8 {
            let body = format!("victim {i}");
            let r = producer
                .send(
                    "victim",
                    Message {
                        key: Some(format!("v{i}")),
                        body: body.clone().into_bytes(),
                        ..Message::default()
                    },
                )
                .await?;
            anyhow::ensure!(r.status.name() == "SEND_OK", "{:?}", r.status);
            victims.push(body);
        }
        victims.sort();
        // Every queue of `victim` gets a forged offset commit far past its end.
        let mut body = b"prefix:".to_vec();
        let mut starts = Vec::new();
        starts.push(body.len());
        body.extend(frame("forged", 0, 0, "forged-key", b"nobody sent this")?);
        for q in 0..8 {
            starts.push(body.len());
            body.extend(frame("%OFFSETS%", 0, q, &format!("g1\u{1}victim\u{1}{q}"), b"1000000")?);
        }
        starts.push(body.len());
        body.extend(frame("victim", 0, 100_000_000, "forged-far", b"far")?);
        body.extend(b":suffix");
        let attack = producer
            .send(
                "attack",
                Message {
                    key: Some("attack".into()),
                    body: body.clone(),
                    ..Message::default()
                },
            )
            .await?;
        anyhow::ensure!(attack.status.name() == "SEND_OK");
        drop(producer);
        println!("--- SIGKILL before any index checkpoint covers the attack");
        node.sigkill()?;

        let log = super::common::log_bytes(&dir)?;
        let at = log
            .windows(7)
            .position(|w| w == b"prefix:")
            .ok_or_else(|| anyhow::anyhow!("attack body not in the log"))?;
        anyhow::ensure!(log.len() < 1 << 20, "one segment expected");
        let seg = dir.join("log").join(format!("{:020}.log", 0));
        // Torn inside the body: after each forged frame is whole, and in the
        // middle of the last one.
        let mut cuts: Vec<usize> = starts.iter().skip(1).map(|s| at + s).collect();
        cuts.push(at + body.len() - 3);
        for cut in cuts {
            let case = tmp.path().join(format!("cut-{cut}"));
            copy_dir(&dir, &case)?;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(case.join("log").join(seg.file_name().unwrap_or_default()))?;
            f.set_len(cut as u64)?;
            drop(f);
            let node = Node::start(&case, &["--index-interval-ms", "60000"])?;
            let rss = peak_rss_kb(node.child.id())?;
            println!("cut at {cut}: restarted, peak RSS {rss} kB");
            assert!(rss < RSS_BOUND_KB, "cut {cut}: peak RSS {rss} kB over the bound");
            // Searches go through the trace store, which connects (and
            // audits) in the background.
            super::common::audit_done(&node).await?;
            for q in [
                "topic=forged",
                "key=forged-key",
                "key=forged-far",
                "topic=%25OFFSETS%25",
            ] {
                let v = super::common::get_json(format!("{}/api/v1/messages?{q}", node.http)).await?;
                assert_eq!(
                    v["messages"].as_array().map(Vec::len),
                    Some(0),
                    "cut {cut}: {q} found {v}"
                );
            }
            // A group with no real commit starts at the beginning: every
            // acknowledged victim message is delivered (the forged commits
            // would have moved it past all of them).
            assert_eq!(
                consume_all(&node, "g1")?,
                victims,
                "cut {cut}: group g1 skipped messages"
            );
        }
        Ok(())
    }
}
