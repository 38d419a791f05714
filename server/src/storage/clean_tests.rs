//! The clean-shutdown marker on the fault-injecting file system: trusted
//! only when it proves itself, removed at every open, never left stale.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::storage::faultfs::{FaultFs, PowerLoss};
use crate::storage::{Flush, NewMessage, StoreOptions};

const DATA: &str = "/data";

fn marker_path() -> PathBuf {
    Path::new(DATA).join(FILE)
}

fn open(fs: &FaultFs) -> Result<Store, StorageError> {
    let mut o = StoreOptions::new(DATA, Flush::Sync);
    o.segment_bytes = 4096;
    o.index_interval = Duration::from_millis(20);
    Store::open(Arc::new(fs.clone()), o)
}

/// Opens, appends `n` messages (rolling segments), closes cleanly.
fn fill(fs: &FaultFs, n: usize) -> Result<(Vec<u64>, Marker), Box<dyn std::error::Error>> {
    let store = open(fs)?;
    let mut at = Vec::new();
    for i in 0..n {
        let a = store.append(NewMessage {
            topic: "t".into(),
            key: Some(format!("k{i}")),
            body: format!("body {i} {}", "x".repeat(i % 200)).into_bytes(),
            ..NewMessage::default()
        })?;
        at.push(a.pos);
    }
    let marker = store.close_clean()?;
    Ok((at, marker))
}

fn why(store: &Store) -> String {
    store.opened().why.clone().unwrap_or_default()
}

#[test]
fn a_clean_close_skips_the_scan_and_the_marker_is_gone_before_any_write() -> Result<(), Box<dyn std::error::Error>> {
    let fs = FaultFs::new();
    let (at, marker) = fill(&fs, 300)?;
    assert!(marker.segments.len() > 1, "the test wants several segments");
    assert_eq!(marker.records, 300);
    let store = open(&fs)?;
    assert!(!store.opened().scanned, "{:?}", store.opened());
    assert!(!fs.exists(&marker_path()), "the marker must be removed at open");
    assert!(store.damage().is_empty());
    assert_eq!(store.stats().log_end, marker.end);
    assert!(store.epoch() > marker.max_epoch);
    assert_eq!(store.read(at[299])?.body.len(), "body 299 ".len() + 299 % 200);
    assert_eq!(store.runs(), marker.runs);
    // A crash now: the removal was durable, so the next open scans.
    drop(store);
    fs.power_loss(PowerLoss::DropUnsynced);
    let fs = fs.reboot();
    let store = open(&fs)?;
    assert!(store.opened().scanned);
    assert!(why(&store).contains("no clean-shutdown marker"), "{}", why(&store));
    Ok(())
}

#[test]
fn a_marker_records_what_a_scan_finds() -> Result<(), Box<dyn std::error::Error>> {
    let fs = FaultFs::new();
    let (_, marker) = fill(&fs, 120)?;
    // Put the marker aside and let a real scan run over the same files.
    let bytes = encode(&marker);
    fs.remove_file(&marker_path())?;
    let store = open(&fs)?;
    assert!(store.opened().scanned);
    let again = store.close_clean()?;
    let expect = Marker {
        checkpoint_seq: again.checkpoint_seq,
        ..decode(&bytes)?
    };
    assert_eq!(again, expect, "scan and marker disagree");
    Ok(())
}

#[test]
fn a_corrupted_marker_falls_back_to_the_scan() -> Result<(), Box<dyn std::error::Error>> {
    let fs = FaultFs::new();
    let (_, marker) = fill(&fs, 50)?;
    let len = encode(&marker).len() as u64;
    for at in [0, 5, 20, len / 2, len - 1] {
        fs.corrupt_byte(&marker_path(), at)?;
        let store = open(&fs)?;
        assert!(store.opened().scanned, "byte {at}");
        assert!(!fs.exists(&marker_path()));
        store.close_clean()?;
    }
    Ok(())
}

#[test]
fn a_marker_that_disagrees_with_the_files_falls_back_to_the_scan() -> Result<(), Box<dyn std::error::Error>> {
    // A torn tail past the marker's end: lengths differ, the scan cuts it.
    let fs = FaultFs::new();
    let (_, marker) = fill(&fs, 50)?;
    let (base, len) = marker.segments[marker.segments.len() - 1];
    let seg = fs.open(&Path::new(DATA).join("log").join(Segment::file_name(base)), false)?;
    seg.write_at(b"torn bytes", len)?;
    let store = open(&fs)?;
    assert!(store.opened().scanned);
    assert!(why(&store).contains("length"), "{}", why(&store));
    assert_eq!(store.stats().log_end, marker.end);
    assert!(store.damage().iter().all(|d| d.kind == DamageKind::TornTail));
    drop(store);

    // A segment file the marker does not name.
    let fs = FaultFs::new();
    let (_, marker) = fill(&fs, 50)?;
    fs.open(&Path::new(DATA).join("log").join(Segment::file_name(marker.end)), true)?;
    let store = open(&fs)?;
    assert!(why(&store).contains("segment files"), "{}", why(&store));
    drop(store);

    // The last record rewritten (same length): the tail check catches it.
    let fs = FaultFs::new();
    let (at, marker) = fill(&fs, 50)?;
    let (base, _) = marker.segments[marker.segments.len() - 1];
    let path = Path::new(DATA).join("log").join(Segment::file_name(base));
    fs.corrupt_byte(&path, at[49] - base + 30)?;
    let store = open(&fs)?;
    assert!(why(&store).contains("last record"), "{}", why(&store));
    assert!(store.damage().iter().any(|d| d.kind == DamageKind::Corrupt));
    Ok(())
}

#[test]
fn a_stale_marker_from_an_earlier_clean_stop_is_not_trusted() -> Result<(), Box<dyn std::error::Error>> {
    let fs = FaultFs::new();
    let (_, marker) = fill(&fs, 40)?;
    let stale = encode(&marker);
    // Another boot appends and stops without a marker (a crash would too).
    let store = open(&fs)?;
    store.append(NewMessage {
        topic: "t".into(),
        body: b"later".to_vec(),
        ..NewMessage::default()
    })?;
    store.close();
    drop(store);
    // Someone restores the old marker: the checkpoint has moved on since.
    let f = fs.open(&marker_path(), true)?;
    f.write_at(&stale, 0)?;
    let store = open(&fs)?;
    assert!(store.opened().scanned);
    assert!(why(&store).contains("checkpoint"), "{}", why(&store));
    Ok(())
}

#[test]
fn an_oversized_marker_is_not_read() -> Result<(), Box<dyn std::error::Error>> {
    let fs = FaultFs::new();
    fill(&fs, 10)?;
    let f = fs.open(&marker_path(), false)?;
    f.set_len(MAX_BYTES as u64 + 1)?;
    let store = open(&fs)?;
    assert!(why(&store).contains("bound"), "{}", why(&store));
    assert!(!fs.exists(&marker_path()));
    Ok(())
}

#[test]
fn decode_refuses_every_truncation_and_stray_count() {
    let m = Marker {
        checkpoint_seq: 9,
        end: 4096,
        records: 20,
        max_epoch: 3,
        last: Some(4000),
        segments: vec![(0, 2048), (2048, 2048)],
        runs: vec![
            WriterRun {
                start: 0,
                node: 1,
                epoch: 2,
            },
            WriterRun {
                start: 1000,
                node: 1,
                epoch: 3,
            },
        ],
    };
    let bytes = encode(&m);
    assert_eq!(decode(&bytes).ok(), Some(m));
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // A huge count with a valid CRC allocates nothing and is refused.
    let mut forged = bytes[..HEAD].to_vec();
    forged.extend_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&forged);
    forged.extend_from_slice(&crc.to_le_bytes());
    assert!(matches!(decode(&forged), Err(Distrust::Malformed(_))));
}

#[test]
fn no_marker_after_a_failed_store() -> Result<(), Box<dyn std::error::Error>> {
    let fs = FaultFs::new();
    let store = open(&fs)?;
    fs.fail_syncs(1_000_000);
    store.append(NewMessage {
        topic: "t".into(),
        body: b"x".to_vec(),
        ..NewMessage::default()
    })?;
    for _ in 0..500 {
        if store.failure().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(store.failure().is_some(), "the fsync failure must fail the store");
    assert!(matches!(store.close_clean(), Err(Unclean::State(_))));
    assert!(!fs.exists(&marker_path()));
    Ok(())
}
