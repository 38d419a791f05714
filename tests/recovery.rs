//! Recovery from a torn tail and from bit rot, on real files.
//!
//! Contract: a torn tail (bytes past the flushed mark that are not a whole
//! valid record) is cut and every complete record before it stays. A flipped
//! byte inside flushed data is reported (log, `/healthz` detail, metric),
//! the damaged record is never served as data, and the valid records on both
//! sides of it stay readable; new appends keep working.

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
    let resp = app(AppState { broker }, DEFAULT_BODY_LIMIT)
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
